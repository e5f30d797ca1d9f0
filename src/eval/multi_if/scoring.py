"""Strict and loose verdicts of one prompt's instructions, and the four accuracies of a step.

Strict: the response as written. Loose: an instruction also counts as followed when any of IFEval's
relaxations of the response passes (first line dropped, last line dropped, both, and each of these
and the response itself with `*` removed). Prompt-level accuracy needs every instruction of a prompt
followed; instruction-level pools the instructions. Both benchmarks count an empty response as
following nothing; IFEval also treats a response of only whitespace as empty, Multi-IF checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpo.eval.multi_if.checkers import Rules, build_checker

STEP_METRICS = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")


@dataclass(frozen=True)
class IFExample:
    """One prompt (one step of a Multi-IF conversation) and the instructions its answer must follow."""

    key: str
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]]
    rules: Rules


@dataclass(frozen=True)
class IFResult:
    strict: list[bool]
    loose: list[bool]


def loose_variants(response: str) -> list[str]:
    """The response and IFEval's seven relaxations of it."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(text.replace("*", "") for text in cut)]


def check_response(example: IFExample, response: str) -> IFResult:
    """Strict and loose verdicts of each instruction of `example` for `response`."""
    answered = bool(response.strip()) if example.rules == "ifeval" else bool(response)
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(example.instruction_ids, example.kwargs):
        checker = build_checker(instruction_id, kwargs, example.rules)
        strict.append(answered and bool(checker.check_following(response)))
        loose.append(any(text.strip() and checker.check_following(text) for text in variants))
    return IFResult(strict=strict, loose=loose)


def step_accuracies(results: list[IFResult]) -> dict[str, float]:
    """The four accuracies of one step and their mean (the paper's headline per step)."""
    flat = {kind: [v for r in results for v in getattr(r, kind)] for kind in ("strict", "loose")}
    acc = {
        "prompt_strict": sum(all(r.strict) for r in results) / len(results),
        "inst_strict": sum(flat["strict"]) / len(flat["strict"]),
        "prompt_loose": sum(all(r.loose) for r in results) / len(results),
        "inst_loose": sum(flat["loose"]) / len(flat["loose"]),
    }
    acc["mean"] = sum(acc.values()) / len(STEP_METRICS)
    return acc
