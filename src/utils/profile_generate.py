"""Generate system profiles (with verifiable constraints) and vivid user profiles (paper §5.2, app. G).

    python src/utils/profile_generate.py system --input=corpus.jsonl --output=data/profiles.jsonl \
        --config=conf/pipeline/openai.yaml [--shard=0/4] [--lang=en]
    python src/utils/profile_generate.py user --input=personas.txt --output=data/users.jsonl --config=...

Inputs: a JSONL corpus (SysBank release or normalised records, or `{"id", "text"}`; for users
`{"id", "persona"}`) or plain text, one seed per line (id = `<file stem>_<line number>`). Outputs
`SystemProfile` / `UserProfile` JSONL, appended as each profile arrives; a rerun skips ids already
written. A system profile whose answer still lacks a name, or has fewer than `min_constraints`
or more than `max_constraints` constraints after the retries, or whose request failed for good, is
not written and is counted, and the run exits 1 (a rerun tries it again).
"""

from __future__ import annotations

from typing import Any

from rpo.utils import cli
from rpo.utils.io import (
    InputError,
    Shard,
    exit_on_input_error,
)
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.llm.runner import run_calls
from rpo.utils.stages.profiles import GenerateStats, read_seeds, run_generation


def _run(
    kind: str,
    input: str,
    output: str,
    config: str,
    shard: str | None,
    lang: str | None,
    concurrency: int | None,
    **options: Any,
) -> None:
    concurrency = cli.optional_integer("concurrency", concurrency, minimum=1)
    selected = Shard.parse(shard)
    output_path = cli.output_file("output", selected.path(output))
    pipeline = PipelineConfig.load(config)
    lang = lang or pipeline.language
    seeds = list(selected.select(read_seeds(input)))
    ids = [seed.id for seed in seeds]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{input}: field id: duplicate id {duplicate!r}")
    stats = GenerateStats()

    async def work(client: LLMClient) -> None:
        await run_generation(
            kind, seeds, client, output_path, lang, concurrency or pipeline.concurrency, stats, **options
        )

    run_calls(pipeline, work, [options.get("role", "profile")])
    print(f"{kind} profiles: {stats.summary()}")
    print(f"written to {output_path}")
    cli.conclude(f"{kind} profiles", stats.written + stats.skipped, stats.failed, stats.first_failure)


@exit_on_input_error
def system(
    input: str,
    output: str,
    config: str,
    shard: str | None = None,
    lang: str | None = None,
    concurrency: int | None = None,
    min_constraints: int = 6,
    max_constraints: int = 12,
    role: str = "profile",
) -> None:
    """System profiles (name, description, skills, 6-12 verifiable constraints) from a seed corpus."""
    min_constraints = cli.integer("min_constraints", min_constraints, minimum=1)
    max_constraints = cli.integer("max_constraints", max_constraints, minimum=1)
    role = cli.name("role", role)
    if min_constraints > max_constraints:
        raise InputError(
            f"--min_constraints/--max_constraints: need 1 <= min <= max, got "
            f"{min_constraints}/{max_constraints}"
        )
    _run(
        "system",
        input,
        output,
        config,
        shard,
        lang,
        concurrency,
        role=role,
        min_constraints=min_constraints,
        max_constraints=max_constraints,
    )


@exit_on_input_error
def user(
    input: str,
    output: str,
    config: str,
    shard: str | None = None,
    lang: str | None = None,
    concurrency: int | None = None,
    role: str = "profile",
) -> None:
    """Vivid user profiles from short persona lines."""
    role = cli.name("role", role)
    _run("user", input, output, config, shard, lang, concurrency, role=role)


if __name__ == "__main__":
    cli.run({"system": system, "user": user})
