"""Sample, judge and reverse: the session detail file, then the DPO baseline pairs.

    python src/dsc/dpo_data_construction.py --config=conf/pipeline/llamafactory_api.yaml \
        [--sessions_path=data/rpo_data/sessions.jsonl] [--detail_path=data/rpo_data/detail.jsonl] \
        [--output_dir=data] [--dataset_name=dpo] [--n=5] [--refine_threshold=0.8] [--shard=0/4] \
        [--no-trigger]
    python src/dsc/dpo_data_construction.py --dataset_only --detail_path=data/rpo_data/detail.jsonl

For each self-play session: reverse its constraints (one reverser call), then for every turn sample
`n` responses from the policy with the earlier turns' reference responses as history, and judge
each response on the constraints the turn's query triggers (selected once per turn by the
pipeline's `trigger` role, else the `judge` endpoint, or taken from the session when self-play
already selected them; `--no-trigger` judges every constraint). Turns of a session are
independent (the history is fixed), so they run concurrently. Each finished session is appended to
the detail JSONL at once; a rerun skips the session_ids already there, and retries the sessions a
failed request left out. The detail file feeds both the DPO baseline (built
here through `rpo.utils.pairs.build.build_dpo_dataset`) and `rpo_data_construction.py`.

`sample_sessions` takes the role protocols, so the offline demo runs the same code with its rule
judge, rule reverser and an in-process tiny-model responder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rpo.utils import cli
from rpo.utils.io import (
    InputError,
    Shard,
    exit_on_input_error,
    read_jsonl,
)
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.pairs.build import build_dpo_dataset
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.conversation import LLMRefiner, LLMResponder
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.reverser import LLMReverser
from rpo.utils.roles.trigger import LLMTriggerSelector
from rpo.utils.schema import SelfPlaySession
from rpo.utils.stages.sampling import SamplingStats, sample_sessions


def sample_and_judge(
    pipeline: PipelineConfig,
    sessions: list[SelfPlaySession],
    output_path: Path,
    selected: Shard,
    n: int,
    concurrency: int,
    refine_threshold: float | None,
    lang: str | None,
    trigger: bool,
) -> SamplingStats:
    """Run the LLM part (resuming into `output_path`), print its summaries, return its counts."""
    trigger_role = ("trigger" if "trigger" in pipeline.roles else "judge") if trigger else None

    async def run() -> tuple[SamplingStats, list[str]]:
        roles = ["response", "judge", "reverse", *([trigger_role] if trigger_role else []),
                 *(["critic"] if refine_threshold is not None else [])]
        async with LLMClient(pipeline, roles=roles) as client:  # keys and hosts checked before any call
            judge = LLMJudge(client, lang=lang)
            reverser = LLMReverser(client, lang=lang)
            refiner = LLMRefiner(client, lang=lang) if refine_threshold is not None else None
            selector = LLMTriggerSelector(client, role=trigger_role, lang=lang) if trigger_role else None
            extras = {
                "sampler_model": pipeline.role("response").model,
                "judge_model": pipeline.role("judge").model,
            }
            stats = await sample_sessions(
                sessions,
                LLMResponder(client),
                judge,
                reverser,
                n=n,
                concurrency=concurrency,
                output_path=output_path,
                shard=selected,
                lang=lang,
                refiner=refiner,
                refine_threshold=refine_threshold,
                extras=extras,
                trigger=selector,
            )
            lines = [
                f"sampling: {stats.summary()}",
                f"judge: {judge.stats.summary()}",
                f"reverser: {reverser.stats.summary()}",
            ]
            if selector is not None:
                lines.append(f"trigger: {selector.stats.summary()}")
            return stats, [*lines, f"detail written to {output_path}", client.usage_table()]

    stats, lines = asyncio.run(run())
    print("\n".join(lines))
    return stats


@exit_on_input_error
def main(
    config: str | None = None,
    sessions_path: str = "data/rpo_data/sessions.jsonl",
    detail_path: str = "data/rpo_data/detail.jsonl",
    output_dir: str = "data",
    dataset_name: str = "dpo",
    n: int = 5,
    concurrency: int | None = None,
    shard: str | None = None,
    refine_threshold: float | None = None,
    lang: str | None = None,
    trigger: bool = True,
    dataset_only: bool = False,
) -> None:
    """Sample and judge every session (resuming), then build the DPO baseline from the detail file.

    With `--shard=k/n` each shard appends to its own detail file and skips the pair building (merge
    the shard files and run `rpo_data_construction.py` / this stage again unsharded).
    `--dataset_only` builds the DPO baseline from `--detail_path` alone: no config, no calls.
    """
    n = cli.integer("n", n, minimum=1)
    concurrency = cli.optional_integer("concurrency", concurrency, minimum=1)
    if refine_threshold is not None:
        refine_threshold = cli.fraction("refine_threshold", refine_threshold, allow_zero=False)
    trigger = cli.switch("trigger", trigger)
    dataset_only = cli.switch("dataset_only", dataset_only)
    dataset_name = cli.name("dataset_name", dataset_name)
    cli.output_dir("output_dir", output_dir)
    selected = Shard.parse(shard)
    output_path = selected.path(detail_path)
    if not dataset_only:
        if config is None:
            raise InputError("--config is required (or pass --dataset_only to build from --detail_path)")
        cli.output_file("detail_path", output_path)
        pipeline = PipelineConfig.load(config)
        sessions = list(
            cli.refuse_blank_constraints(
                read_jsonl(sessions_path, SelfPlaySession, unique="session_id"), sessions_path
            )
        )
        stats = sample_and_judge(
            pipeline,
            sessions,
            output_path,
            selected,
            n,
            concurrency or pipeline.concurrency,
            refine_threshold,
            pick_lang(lang, pipeline),
            trigger,
        )
        done = stats.written + stats.skipped
        if selected.count > 1 or not done:
            if selected.count > 1:
                print(
                    "sharded run: merge the shard detail files, then build the pair datasets from the merged file"
                )
            cli.conclude("session details", done, stats.failed, stats.first_failure)
            return
    counters = build_dpo_dataset(str(output_path), output_dir, dataset_name)
    print(counters.summary())
    failed, first_failure = (0, "") if dataset_only else (stats.failed, stats.first_failure)
    cli.conclude("DPO records", counters.pairs, failed, first_failure)


if __name__ == "__main__":
    cli.run(main)
