"""Multi-IF / IFEval evaluation: answer the steps of each conversation, check the verifiable instructions.

    python src/eval/multi_if.py run --data=FILE --output_dir=DIR --model=NAME --base_url=URL
        [--api_key_env=VAR] [--concurrency=N] [--config=conf/pipeline/X.yaml] [--limit=N]
    python src/eval/multi_if.py score --data=FILE --responses=FILE_OR_DIR [--json]

`run` answers the (up to) three steps of every Multi-IF row in one conversation, with the model's
own earlier answers as history, appending each answer to `DIR/responses.jsonl` as it arrives (a
killed run resumes, a finished one makes no calls), then writes `DIR/metrics.json` and prints the
table. `score` also takes IFEval's own files (`input_data.jsonl` + a `{prompt, response}` JSONL).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rpo.eval.common import (
    build_config,
    exclusive_output,
    pct,
    pct_ci,
    print_json,
    refuse_other_models,
    run_calls,
    table,
)
from rpo.eval.ifeval import IFResult, check_response, step_accuracies, unsupported_counts
from rpo.eval.metrics import bootstrap_ci95
from rpo.eval.multi_if_data import Row, load_responses, load_rows
from rpo.utils import cli
from rpo.utils.io import JsonlAppender, exit_on_input_error, read_jsonl, write_json
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map

RESPONSE_ROLE = "response"


class StepResponse(BaseModel):
    key: str
    step: int
    prompt: str
    response: str
    model: str


def _by_step(results: dict[str, list[IFResult]], keys: list[str]) -> list[list[IFResult]]:
    depth = max((len(results[key]) for key in keys), default=0)
    return [[results[key][k] for key in keys if len(results[key]) > k] for k in range(depth)]


def _mean(results: list[IFResult]) -> float:
    return step_accuracies(results)["mean"]


def multi_if_metrics(rows: list[Row], responses: dict[tuple[str, int], str], rounds: int = 1000) -> dict[str, Any]:
    """Accuracies per step (strict/loose, prompt/instruction level, their mean), overall and per language."""
    results = {row.key: [check_response(example, responses[(row.key, k)])
                         for k, example in enumerate(row.examples(), 1)] for row in rows}
    steps = _by_step(results, [row.key for row in rows])
    by_language = {}
    for language in sorted({row.language for row in rows}):
        chosen = [row.key for row in rows if row.language == language]
        by_language[language] = {"steps": [step_accuracies(s) for s in _by_step(results, chosen)], "n": len(chosen)}
    return {
        "steps": [step_accuracies(s) for s in steps],
        "by_language": by_language,
        "n": len(rows),
        "ci95": [bootstrap_ci95(s, {"mean": _mean}, rounds=rounds) for s in steps],
        "unsupported": unsupported_counts([r for rs in results.values() for r in rs]),
    }


def format_report(metrics: dict[str, Any]) -> str:
    header = ["step", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose", "mean [95% CI]"]
    rows = [(k, pct(s["prompt_strict"]), pct(s["inst_strict"]), pct(s["prompt_loose"]), pct(s["inst_loose"]),
             pct_ci(s["mean"], ci["mean"]))
            for k, (s, ci) in enumerate(zip(metrics["steps"], metrics["ci95"]), 1)]
    parts = [table(header, rows), f"rows: {metrics['n']}"]
    if len(metrics["by_language"]) > 1:
        parts.append(table(["language", "n", *[f"step {k} mean" for k in range(1, len(metrics["steps"]) + 1)]],
                           [(lang, v["n"], *[pct(s["mean"]) for s in v["steps"]])
                            for lang, v in metrics["by_language"].items()]))
    if metrics["unsupported"]:
        listed = ", ".join(f"{iid} ×{n}" for iid, n in metrics["unsupported"].items())
        parts.append(f"unsupported instruction ids, counted as not followed: {listed}")
    return "\n\n".join(parts)


def _report_unsupported(metrics: dict[str, Any]) -> None:
    if metrics["unsupported"]:
        total = sum(metrics["unsupported"].values())
        print(f"warning: {total} instructions have ids the checker library does not support "
              "(counted as not followed; see `unsupported`)", file=sys.stderr)


@exit_on_input_error
def score(data: str, responses: str, json: bool = False, bootstrap_rounds: int = 1000) -> None:
    """Score recorded responses against Multi-IF or IFEval data."""
    rows = load_rows(data)
    metrics = multi_if_metrics(rows, load_responses(responses, rows), rounds=bootstrap_rounds)
    _report_unsupported(metrics)
    if json:
        print_json(metrics)
    else:
        print(format_report(metrics))


async def answer_rows(client: LLMClient, rows: list[Row], path: Path, concurrency: int) -> dict[tuple[str, int], str]:
    """Answer every step not already in `path`, each row's steps in one conversation; all answers."""
    with JsonlAppender(path) as sink:
        records = list(read_jsonl(path, StepResponse, allow_empty=True))
        model = client.config.role(RESPONSE_ROLE).model
        refuse_other_models(path, {r.model for r in records}, model)
        answered = {(r.key, r.step): r.response for r in records}
        if answered:
            print(f"resuming: {len(answered)} steps already answered", file=sys.stderr)

        async def one(row: Row) -> None:
            messages: list[dict[str, str]] = []
            for k, step in enumerate(row.steps, 1):
                messages.append({"role": "user", "content": step.prompt})
                if (row.key, k) not in answered:
                    text = (await client.chat(RESPONSE_ROLE, list(messages))).texts[0]
                    sink.write(StepResponse(key=row.key, step=k, prompt=step.prompt, response=text, model=model))
                    answered[(row.key, k)] = text
                messages.append({"role": "assistant", "content": answered[(row.key, k)]})

        async for _ in bounded_map(one, rows, concurrency, desc="multi-if conversations"):
            pass
    return answered


@exit_on_input_error
def run(
    data: str,
    output_dir: str,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    concurrency: int | None = 16,
    config: str | None = None,
    limit: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> None:
    """Answer every step with the model under test, then score and print the table."""
    rows = load_rows(data)[:limit] if limit else load_rows(data)
    with exclusive_output(output_dir) as out:
        pipeline = build_config(
            config,
            {RESPONSE_ROLE: {"model": model, "base_url": base_url, "api_key_env": api_key_env,
                             "temperature": temperature if temperature is not None or config else 0.0,
                             "max_tokens": max_tokens}},
            concurrency,
            out / "cache",
        )

        answers = run_calls(
            pipeline,
            lambda client: answer_rows(client, rows, out / "responses.jsonl", pipeline.concurrency),
            "what was answered is kept: rerun the same command to resume",
        )
        metrics = multi_if_metrics(rows, answers)
        write_json(out / "metrics.json", metrics)
    _report_unsupported(metrics)
    print(format_report(metrics))


if __name__ == "__main__":
    cli.run({"run": run, "score": score})
