"""Sample, judge and reverse: the session detail file, then the DPO baseline pairs.

    python src/dsc/dpo_data_construction.py --config=conf/pipeline/llamafactory_api.yaml \
        [--sessions_path=data/rpo_data/sessions.jsonl] [--detail_path=data/rpo_data/detail.jsonl] \
        [--output_dir=data] [--dataset_name=dpo] [--n=5] [--refine_threshold=0.7] [--refine_rounds=3] \
        [--shard=0/4] [--no-trigger] [--strict_judge]
    python src/dsc/dpo_data_construction.py --dataset_only --detail_path=data/rpo_data/detail.jsonl

For each self-play session: reverse its constraints (one reverser call), then for every turn sample
`n` responses from the policy with the earlier turns' reference responses as history, and judge
each response on the constraints the turn's query triggers (selected once per turn by the
pipeline's `trigger` role, else the `judge` endpoint, or taken from the session when self-play
already selected them; `--no-trigger` judges every constraint). Turns of a session are
independent (the history is fixed), so they run concurrently. Each finished session is appended to
the detail JSONL at once; a rerun skips the session_ids already there, and retries the sessions a
failed request left out.

Refinement, the authors' scheme, is on when the config sets `sampling_refinement:` (as
conf/pipeline/paper.yaml does) or `--refine_threshold` / `--refine_rounds` is given: when the best
sample of a turn follows less than the threshold (0.7) of its triggered constraints, the `critic`
role rewrites the best so far up to `rounds` (3) times, and every rewrite joins the turn's samples
marked `refined` with its `refine_round`. A sample the token cap cut off (`finish_reason: length`)
is written with `truncated: true`, not judged, counted in the summary and never paired. Each
record carries its prompt language (`lang`), which pair construction renders its prompts in.
The detail file feeds both the DPO baseline (built
here through `rpo.utils.pairs.build.build_dpo_dataset`) and `rpo_data_construction.py`.

`sample_sessions` takes the role protocols, so the offline demo runs the same code with its rule
judge, rule reverser and an in-process tiny-model responder.
"""

from __future__ import annotations

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
from rpo.utils.llm.runner import run_calls
from rpo.utils.pairs.build import build_dpo_dataset
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.conversation import LLMRefiner, LLMResponder
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.reverser import LLMReverser
from rpo.utils.roles.trigger import LLMTriggerSelector
from rpo.utils.schema import SelfPlaySession
from rpo.utils.stages.sampling import Refinement, SamplingStats, sample_sessions


def sample_and_judge(
    pipeline: PipelineConfig,
    sessions: list[SelfPlaySession],
    output_path: Path,
    selected: Shard,
    n: int,
    concurrency: int,
    refine: tuple[float, int] | None,
    lang: str | None,
    trigger: bool,
    strict_judge: bool = False,
) -> SamplingStats:
    """Run the LLM part (resuming into `output_path`), print its summaries, return its counts."""
    trigger_role = ("trigger" if "trigger" in pipeline.roles else "judge") if trigger else None

    roles = ["response", "judge", "reverse", *([trigger_role] if trigger_role else []),
             *(["critic"] if refine is not None else [])]

    async def work(client: LLMClient) -> tuple[SamplingStats, list[str]]:
        judge = LLMJudge(client, lang=lang, strict=strict_judge)
        reverser = LLMReverser(client, lang=lang)
        refinement = Refinement(LLMRefiner(client, lang=lang), *refine) if refine is not None else None
        selector = LLMTriggerSelector(client, role=trigger_role, lang=lang) if trigger_role else None
        extras = {  # stored on every record; a resume with other values is refused
            "sampler_model": pipeline.role("response").model,
            "judge_model": pipeline.role("judge").model,
            "samples_per_turn": n,
            "trigger_selection": trigger,
            "strict_judge": strict_judge,
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
            refinement=refinement,
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
        return stats, [*lines, f"detail written to {output_path}"]

    stats, lines = run_calls(pipeline, work, roles)
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
    refine_rounds: int | None = None,
    lang: str | None = None,
    trigger: bool = True,
    dataset_only: bool = False,
    strict_judge: bool = False,
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
    refine_rounds = cli.optional_integer("refine_rounds", refine_rounds, minimum=1)
    strict_judge = cli.switch("strict_judge", strict_judge)
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
        configured = pipeline.sampling_refinement
        refine = None
        if refine_threshold is not None or refine_rounds is not None or configured is not None:
            refine = (
                refine_threshold if refine_threshold is not None else configured.threshold if configured else 0.7,
                refine_rounds if refine_rounds is not None else configured.rounds if configured else 3,
            )
        stats = sample_and_judge(
            pipeline,
            sessions,
            output_path,
            selected,
            n,
            concurrency or pipeline.concurrency,
            refine,
            pick_lang(lang, pipeline),
            trigger,
            strict_judge,
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
