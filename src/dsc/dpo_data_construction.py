"""Sample, judge and reverse: the session detail file, then the DPO baseline pairs.

    python src/dsc/dpo_data_construction.py --config=conf/pipeline/llamafactory_api.yaml \
        [--sessions_path=data/rpo_data/sessions.jsonl] [--detail_path=data/rpo_data/detail.jsonl] \
        [--output_dir=data] [--dataset_name=dpo] [--n=5] [--refine_threshold=0.8] [--shard=0/4] \
        [--no-trigger]

For each self-play session: reverse its constraints (one reverser call), then for every turn sample
`n` responses from the policy with the earlier turns' reference responses as history, and judge
each response on the constraints the turn's query triggers (selected once per turn by the
pipeline's `trigger` role, else the `judge` endpoint, or taken from the session when self-play
already selected them; `--no-trigger` judges every constraint). Turns of a session are independent (the history is fixed), so
they run concurrently. Each finished session is appended to the detail JSONL at once;
a rerun skips the session_ids already there. The detail file feeds both the DPO baseline (built
here through `rpo.utils.pairs.build.build_dpo_dataset`) and `rpo_data_construction.py`.

`sample_sessions` takes the role protocols, so the offline demo runs the same code with its rule
judge, rule reverser and an in-process tiny-model responder.
"""

from __future__ import annotations

import asyncio

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
from rpo.utils.roles.judge import JudgeStats, LLMJudge
from rpo.utils.roles.reverser import LLMReverser, ReverseStats
from rpo.utils.roles.trigger import LLMTriggerSelector, TriggerStats
from rpo.utils.schema import SelfPlaySession
from rpo.utils.stages.sampling import SamplingStats, sample_sessions


@exit_on_input_error
def main(
    config: str,
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
) -> None:
    """Sample and judge every session (resuming), then build the DPO baseline from the detail file.

    With `--shard=k/n` each shard appends to its own detail file and skips the pair building (merge
    the shard files and run `rpo_data_construction.py` / this stage again unsharded).
    """
    if n < 1:
        raise InputError(f"--n: expected at least 1 sample per turn, got {n}")
    if refine_threshold is not None and not 0 < float(refine_threshold) <= 1:
        raise InputError(f"--refine_threshold: expected a fraction in (0, 1], got {refine_threshold}")
    selected = Shard.parse(shard)
    pipeline = PipelineConfig.load(config)
    lang = pick_lang(lang, pipeline)
    sessions = list(read_jsonl(sessions_path, SelfPlaySession))
    output_path = selected.path(detail_path)

    trigger_role = ("trigger" if "trigger" in pipeline.roles else "judge") if trigger else None

    async def run() -> tuple[SamplingStats, JudgeStats, ReverseStats, TriggerStats | None, str]:
        async with LLMClient(pipeline) as client:
            judge = LLMJudge(client, lang=lang)
            selector = LLMTriggerSelector(client, role=trigger_role, lang=lang) if trigger_role else None
            reverser = LLMReverser(client, lang=lang)
            refiner = LLMRefiner(client, lang=lang) if refine_threshold is not None else None
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
                concurrency=concurrency or pipeline.concurrency,
                output_path=output_path,
                shard=selected,
                lang=lang,
                refiner=refiner,
                refine_threshold=refine_threshold,
                extras=extras,
                trigger=selector,
            )
            trigger_stats = selector.stats if selector else None
            return stats, judge.stats, reverser.stats, trigger_stats, client.usage_table()

    stats, judge_stats, reverse_stats, trigger_stats, usage = asyncio.run(run())
    print(f"sampling: {stats.summary()}")
    print(f"judge: {judge_stats.summary()}")
    if trigger_stats is not None:
        print(f"trigger: {trigger_stats.summary()}")
    print(f"reverser: {reverse_stats.summary()}")
    print(f"detail written to {output_path}")
    print(usage)
    if selected.count > 1:
        print("sharded run: merge the shard detail files, then build the pair datasets from the merged file")
        return
    build_dpo_dataset(str(output_path), output_dir, dataset_name)


if __name__ == "__main__":
    cli.run(main)
