"""Multi-IF / IFEval figures: the four accuracies per step, overall, per language and as the paper
reports them (English and Chinese rows together, each language weighted by its rows), with
bootstrap intervals, and the printed table."""

from __future__ import annotations

from typing import Any

from rpo.eval.answers import strip_think
from rpo.eval.common import pct, pct_ci
from rpo.eval.metrics import bootstrap_ci95
from rpo.eval.multi_if.data import Row
from rpo.eval.multi_if.scoring import STEP_METRICS, IFResult, check_response, step_accuracies
from rpo.utils.text_table import table

PAPER_LANGUAGES = ("en", "zh")


def _mean(results: list[IFResult]) -> float:
    return step_accuracies(results)["mean"]


def _by_step(rows: list[Row], results: dict[tuple[str, int], IFResult]) -> list[list[IFResult]]:
    """Results per step number 1..deepest; a row counts only in the steps it has."""
    depth = max(step.number for row in rows for step in row.steps)
    return [[results[(row.key, number)] for row in rows if (row.key, number) in results]
            for number in range(1, depth + 1)]


def _paper(rows: list[Row], results: dict[tuple[str, int], IFResult]) -> dict[str, Any] | None:
    """Per step, each accuracy averaged over English and Chinese weighted by their rows in that step;
    None unless both languages are among the rows (the figure would be another one)."""
    per_language = {lang: _by_step([r for r in rows if r.language == lang], results)
                    for lang in PAPER_LANGUAGES if any(r.language == lang for r in rows)}
    if len(per_language) < len(PAPER_LANGUAGES):
        return None
    depth = min(len(steps) for steps in per_language.values())
    steps = []
    for k in range(depth):
        parts = [(len(s[k]), step_accuracies(s[k])) for s in per_language.values()]
        total = sum(n for n, _ in parts)
        acc = {m: sum(n * a[m] for n, a in parts) / total for m in STEP_METRICS}
        acc["mean"] = sum(acc.values()) / len(STEP_METRICS)
        steps.append(acc)
    return {"languages": list(PAPER_LANGUAGES), "steps": steps}


def multi_if_metrics(rows: list[Row], responses: dict[tuple[str, int], str], keep_think: bool = False,
                     rounds: int = 1000) -> dict[str, Any]:
    """Accuracies per step overall, per language and for the paper's subset, with their inputs."""
    results, stripped = {}, 0
    for row in rows:
        for step in row.steps:
            answer = responses[(row.key, step.number)]
            if not keep_think:
                answer, removed = strip_think(answer)
                stripped += removed
            results[(row.key, step.number)] = check_response(step.example, answer)
    steps = _by_step(rows, results)
    by_language = {}
    for lang in sorted({row.language for row in rows}):
        chosen = [row for row in rows if row.language == lang]
        by_language[lang] = {"steps": [step_accuracies(s) for s in _by_step(chosen, results)],
                             "n": len(chosen)}
    return {
        "steps": [step_accuracies(s) for s in steps],
        "by_language": by_language,
        "n": len(rows),
        "paper": _paper(rows, results),
        "ci95": [bootstrap_ci95(s, {"mean": _mean}, rounds=rounds) for s in steps],
        "think_stripped": stripped if not keep_think else None,
    }


def format_report(metrics: dict[str, Any]) -> str:
    header = ["step", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose", "mean [95% CI]"]
    rows = [(k, pct(s["prompt_strict"]), pct(s["inst_strict"]), pct(s["prompt_loose"]), pct(s["inst_loose"]),
             pct_ci(s["mean"], ci["mean"]))
            for k, (s, ci) in enumerate(zip(metrics["steps"], metrics["ci95"]), 1)]
    parts = [table(header, rows), f"rows: {metrics['n']}"]
    depth = len(metrics["steps"])
    languages = [(lang, v["n"], *[pct(s["mean"]) for s in v["steps"]], *["-"] * (depth - len(v["steps"])))
                 for lang, v in metrics["by_language"].items()]
    parts.append(table(["language", "rows", *[f"step {k} mean" for k in range(1, depth + 1)]], languages))
    paper = metrics["paper"]
    if paper:
        means = " / ".join(pct(s["mean"]) for s in paper["steps"])
        parts.append(f"paper's figure (English + Chinese, weighted by rows), steps 1..{len(paper['steps'])}: {means}")
    else:
        parts.append("paper's figure (English + Chinese): not computed, the rows do not hold both languages")
    if metrics.get("think_stripped"):
        parts.append(f"<think> blocks removed from {metrics['think_stripped']} answers before checking")
    return "\n\n".join(parts)
