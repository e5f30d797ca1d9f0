"""Reverse constraints with the LLM reverser, or verify existing reversals against judged samples.

    python src/dsc/reverse_constrain.py --input=data/profiles.jsonl --output=data/profiles_rev.jsonl \
        --config=conf/pipeline/openai.yaml
    python src/dsc/reverse_constrain.py --input=data/rpo_data/detail.jsonl --output=... --config=... [--verify]

Input kinds (recognised from the first record):
- system profiles: each is written back with `reversed_constraints` added;
- session detail records: `reversed_constraints` is recomputed.
With `--verify` (detail input only) nothing is re-reversed: for each constraint, up to
`--max_checks` samples that FAIL it are judged against its reversal; a reversal that some failing
sample does not satisfy is flagged and, unless `--keep_bad`, set to null so pair construction treats
the constraint as non-reversible. Every record gains `reversal_checks`. The output is appended and a
rerun skips the records already there; `--shard=k/n` splits the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import fire
from rpo.utils.io import (
    InputError,
    JsonlAppender,
    Shard,
    completed_keys,
    exit_on_input_error,
    read_jsonl,
)
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.judge import JudgeStats
from rpo.utils.roles.reverser import LLMReversalVerifier, LLMReverser
from rpo.utils.schema import SessionDetail, SystemProfile
from rpo.utils.stages.reversal import VerifyStats, input_kind, verify_records


@exit_on_input_error
def main(
    input: str,
    output: str,
    config: str,
    verify: bool = False,
    max_checks: int = 3,
    keep_bad: bool = False,
    concurrency: int | None = None,
    shard: str | None = None,
    lang: str | None = None,
) -> None:
    """Reverse (or with --verify, check) the constraints of every input record; see the module docstring."""
    kind = input_kind(input)
    if verify and kind != "detail":
        raise InputError(
            f"{input}: --verify needs session detail records (with session_id, reversed_constraints)"
        )
    selected = Shard.parse(shard)
    pipeline = PipelineConfig.load(config)
    lang = pick_lang(lang, pipeline)
    output_path = selected.path(output)
    key = "session_id" if kind == "detail" else "id"
    done = completed_keys(output_path, lambda obj: obj.get(key))
    model = SessionDetail if kind == "detail" else SystemProfile
    skipped = 0

    def pending() -> Iterator[Any]:
        nonlocal skipped
        for record in selected.select(read_jsonl(input, model)):
            if getattr(record, key) in done:
                skipped += 1
            else:
                yield record

    async def run() -> tuple[str, str]:
        async with LLMClient(pipeline) as client:
            width = concurrency or pipeline.concurrency
            with JsonlAppender(output_path) as out:
                if verify:
                    judge_stats = JudgeStats()
                    stats = VerifyStats()
                    verifier = LLMReversalVerifier(client, lang=lang, stats=judge_stats)
                    await verify_records(pending(), verifier, out, max_checks, keep_bad, width, stats)
                    stats.skipped = skipped
                    summary = f"verify: {stats.summary()}\njudge: {judge_stats.summary()}"
                else:
                    reverser = LLMReverser(client, lang=lang)

                    async def reverse(record: Any) -> dict[str, Any]:
                        profile = record.profile if kind == "detail" else record
                        reversed_constraints = await reverser.reverse(profile)
                        return {
                            **record.model_dump(exclude_unset=True),
                            "reversed_constraints": reversed_constraints,
                        }

                    async for _, result in bounded_map(reverse, pending(), width, desc="reverse"):
                        out.write(result)
                    summary = f"reverse: {reverser.stats.summary()} (skipped, already done: {skipped})"
            return summary, client.usage_table()

    summary, usage = asyncio.run(run())
    print(summary)
    print(f"written to {output_path}")
    print(usage)


if __name__ == "__main__":
    fire.Fire(main)
