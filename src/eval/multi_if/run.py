"""`run` and `score` of `multi_if.py`: answer every step of every conversation, then check them.

`run` answers the steps of a row in one conversation, with the model's own earlier answers as
history, appending each answer to `DIR/responses.jsonl` as it arrives. A conversation whose request
fails for good stops there; every other one is finished, the failures are reported and the command
exits non-zero, so a rerun answers only what is missing. The folder records what its answers
depend on (`run.json`: data file hash, model, decoding, languages) and refuses a rerun with others.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from rpo.eval.answers import answer_warnings
from rpo.eval.common import (
    build_config,
    exclusive_output,
    model_flags,
    print_json,
    refuse_other_models,
)
from rpo.eval.multi_if.data import Row, load_responses, load_rows, parse_languages
from rpo.eval.multi_if.summary import format_report, multi_if_metrics
from rpo.eval.run_record import check_or_record, file_sha256
from rpo.utils import cli
from rpo.utils.io import JsonlAppender, exit_on_input_error, read_jsonl, write_json
from rpo.utils.llm.client import LLMClient, LLMError
from rpo.utils.llm.concurrency import bounded_map

RESPONSE_ROLE = "response"


class StepResponse(BaseModel):
    key: str
    step: int
    prompt: str
    response: str
    model: str
    truncated: bool = False  # the server stopped it at the token cap (`finish_reason: length`)


def _print_warnings(rows: list[Row], responses: dict[tuple[str, int], str],
                    truncated: set[tuple[str, int]] = frozenset()) -> None:
    """Warn when most answers are empty, cut off or alike (`truncated`: the steps cut at the cap)."""
    steps = [(row.key, step.number) for row in rows for step in row.steps]
    answers = [responses[key] for key in steps]
    for line in answer_warnings(answers, [key in truncated for key in steps]):
        print(f"warning: {line}", file=sys.stderr)


@exit_on_input_error
def score(data: str, responses: str, languages: str | None = None, json: bool = False,
          keep_think: bool = False, bootstrap_rounds: int = 1000) -> None:
    """Score recorded responses against Multi-IF or IFEval data."""
    keep_think = cli.switch("keep_think", keep_think)
    rows = load_rows(data, parse_languages(languages))
    answers = load_responses(responses, rows)
    metrics = multi_if_metrics(rows, answers, keep_think=keep_think,
                               rounds=cli.integer("bootstrap_rounds", bootstrap_rounds, minimum=1))
    _print_warnings(rows, answers)
    if json:
        print_json(metrics)
    else:
        print(format_report(metrics))


@dataclass
class Answered:
    """What `answer_rows` leaves in a run folder: every answer by (key, step), the steps the token cap
    cut off, and one line per conversation stopped by a request that failed for good."""

    texts: dict[tuple[str, int], str]
    truncated: set[tuple[str, int]]
    failures: list[str]


async def answer_rows(client: LLMClient, rows: list[Row], path: Path, concurrency: int) -> Answered:
    """Answer every step not already in `path`, each row's steps in one conversation."""
    failures: list[str] = []
    with JsonlAppender(path) as sink:
        records = list(read_jsonl(path, StepResponse, allow_empty=True))
        model = client.config.role(RESPONSE_ROLE).model
        refuse_other_models(path, {r.model for r in records}, model)
        answered = {(r.key, r.step): r.response for r in records}
        truncated = {(r.key, r.step) for r in records if r.truncated}
        if answered:
            print(f"resuming: {len(answered)} steps already answered", file=sys.stderr)

        async def one(row: Row) -> None:
            messages: list[dict[str, str]] = []
            for step in row.steps:
                messages.append({"role": "user", "content": step.example.prompt})
                if (row.key, step.number) not in answered:
                    try:
                        result = await client.chat(RESPONSE_ROLE, list(messages))
                    except LLMError as err:
                        failures.append(f"key {row.key} step {step.number}: {err}")
                        return
                    text = result.texts[0]
                    sink.write(StepResponse(key=row.key, step=step.number, prompt=step.example.prompt,
                                            response=text, model=model, truncated=result.truncated(0)))
                    answered[(row.key, step.number)] = text
                    if result.truncated(0):
                        truncated.add((row.key, step.number))
                messages.append({"role": "assistant", "content": answered[(row.key, step.number)]})

        async for _ in bounded_map(one, rows, concurrency, desc="multi-if", unit="step",
                                   weight=lambda row: len(row.steps)):
            pass
    return Answered(answered, truncated, failures)


@exit_on_input_error
def run(
    data: str,
    output_dir: str,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    languages: str | None = None,
    concurrency: int | None = 16,
    config: str | None = None,
    limit: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    keep_think: bool = False,
) -> None:
    """Answer every step with the model under test, then score and print the table."""
    keep_think = cli.switch("keep_think", keep_think)
    limit = cli.optional_integer("limit", limit, minimum=1)
    selected = parse_languages(languages)
    rows = load_rows(data, selected)[:limit]
    pipeline = build_config(
        config,
        {RESPONSE_ROLE: model_flags(model, base_url, api_key_env, temperature, top_p, max_tokens, config)},
        concurrency,
        Path(output_dir) / "cache",
    )
    role = pipeline.role(RESPONSE_ROLE)
    with exclusive_output(output_dir) as out:
        check_or_record(out, {
            "data_sha256": file_sha256(data),
            "model": role.model,
            "decoding": {"temperature": role.temperature, "top_p": role.top_p, "max_tokens": role.max_tokens,
                         "extra_body": role.extra_body},
            "languages": selected,
        })
        from rpo.utils.llm.runner import run_calls  # the client loads only for commands that call

        answered = run_calls(
            pipeline,
            lambda client: answer_rows(client, rows, out / "responses.jsonl", pipeline.concurrency),
            resume_hint="what was answered is kept: rerun the same command to resume",
        )
        if answered.failures:
            print(f"error: {len(answered.failures)} of {len(rows)} conversations stopped at a request that "
                  f"failed for good (first: {answered.failures[0]}); no figures are written: rerun the same "
                  "command to answer the rest", file=sys.stderr)
            sys.exit(1)
        metrics = multi_if_metrics(rows, answered.texts, keep_think=keep_think)
        write_json(out / "metrics.json", metrics)
    _print_warnings(rows, answered.texts, answered.truncated)
    print(format_report(metrics))


def main() -> None:
    cli.run({"run": run, "score": score})
