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
rerun skips the records already there; a record whose request failed for good (or whose reversal
answer stayed unusable) is not written, is counted, makes the run exit 1, and is retried by the
next run. `--shard=k/n` splits the input.
"""

from __future__ import annotations

from rpo.utils import cli
from rpo.utils.io import (
    InputError,
    JsonlAppender,
    Shard,
    completed_keys,
    exit_on_input_error,
    read_jsonl,
)
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.llm.runner import run_calls
from rpo.utils.prompts.language import pick_lang
from rpo.utils.roles.reverser import LLMReversalVerifier, LLMReverser
from rpo.utils.schema import SessionDetail, SystemProfile
from rpo.utils.stages.reversal import (
    ReversalRunStats,
    VerifyStats,
    input_kind,
    not_done,
    reverse_records,
    verify_records,
)


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
    verify = cli.switch("verify", verify)
    keep_bad = cli.switch("keep_bad", keep_bad)
    max_checks = cli.integer("max_checks", max_checks, minimum=1)
    concurrency = cli.optional_integer("concurrency", concurrency, minimum=1)
    kind = input_kind(input)
    if verify and kind != "detail":
        raise InputError(
            f"{input}: --verify needs session detail records (with session_id, reversed_constraints)"
        )
    selected = Shard.parse(shard)
    output_path = cli.output_file("output", selected.path(output))
    pipeline = PipelineConfig.load(config)
    lang = pick_lang(lang, pipeline)
    key = "session_id" if kind == "detail" else "id"
    model = SessionDetail if kind == "detail" else SystemProfile
    records = list(selected.select(cli.refuse_blank_constraints(read_jsonl(input, model, unique=key), input)))

    async def work(client: LLMClient) -> tuple[ReversalRunStats | VerifyStats, str]:
        width = concurrency or pipeline.concurrency
        with JsonlAppender(output_path) as out:  # locked before reading what is done: one writer only
            done = completed_keys(output_path, lambda obj: obj.get(key))
            stats: ReversalRunStats | VerifyStats
            if verify:
                stats = VerifyStats()
                verifier = LLMReversalVerifier(client, lang=lang)
                pending = not_done(records, done, key, stats)
                await verify_records(pending, verifier, out, max_checks, keep_bad, width, stats)
                summary = f"verify: {stats.summary()}\njudge: {verifier.judge.stats.summary()}"
            else:
                stats = ReversalRunStats()
                reverser = LLMReverser(client, lang=lang)
                await reverse_records(not_done(records, done, key, stats), reverser, out, width, stats)
                summary = f"reverse: {stats.summary()}\nreverser: {reverser.stats.summary()}"
        return stats, summary

    stats, summary = run_calls(pipeline, work, ["judge" if verify else "reverse"])
    print(summary)
    print(f"written to {output_path}")
    built = (stats.records if isinstance(stats, VerifyStats) else stats.written) + stats.skipped
    cli.conclude("records", built, stats.failed, stats.first_failure)


if __name__ == "__main__":
    cli.run(main)
