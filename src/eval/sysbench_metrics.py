"""SysBench's CSR / ISR / SSR of judged dialogues, with intervals and the breakdowns of its tables."""

from __future__ import annotations

from typing import Any

from rpo.eval.common import pct, pct_ci, table
from rpo.eval.metrics import Session, bootstrap_ci95, isr, score
from rpo.eval.sysbench_data import JudgedTurn

DIALOGUE_KINDS = {True: "related", False: "parallel"}


def sessions_of(dialogues: list[list[JudgedTurn]]) -> list[Session]:
    return [[turn.followed() for turn in dialogue] for dialogue in dialogues]


def _by_type(dialogues: list[list[JudgedTurn]]) -> dict[str, float]:
    pooled: dict[str, list[bool]] = {}
    for dialogue in dialogues:
        for turn in dialogue:
            for key, verdict in (turn.verdicts or {}).items():
                pooled.setdefault(turn.criteria[key].criteria_type, []).append(verdict == "是")
    return {kind: sum(v) / len(v) for kind, v in sorted(pooled.items())}


def sysbench_metrics(dialogues: list[list[JudgedTurn]], rounds: int = 1000) -> dict[str, Any]:
    """The metrics object of `metrics.json` and `score --json` (fractions in [0, 1]).

    Dialogues are taken in `system_id` order, so the bootstrap intervals do not depend on the order
    in which a run happened to finish them (a run and `score` of its output agree to the digit).
    """
    dialogues = sorted(dialogues, key=lambda dialogue: str(dialogue[0].system_id))
    sessions = sessions_of(dialogues)
    turns = [turn for dialogue in dialogues for turn in dialogue]
    max_turn = max(turn.turn for turn in turns)
    by_turn = [isr([[t.followed() for t in turns if t.turn == k]]) for k in range(1, max_turn + 1)]
    alignments = sorted({t.alignment for t in turns})
    by_alignment = {a: isr([[t.followed() for t in turns if t.alignment == a]]) for a in alignments}
    by_dialogue = {}
    for related, name in DIALOGUE_KINDS.items():
        chosen = [s for s, d in zip(sessions, dialogues) if d[0].rounds_related is related]
        if chosen:
            by_dialogue[name] = {**score(chosen), "dialogues": len(chosen)}
    return {
        **score(sessions),
        "ci95": bootstrap_ci95(sessions, rounds=rounds),
        "by_type": _by_type(dialogues),
        "by_turn": by_turn,
        "by_alignment": by_alignment,
        "by_dialogue": by_dialogue,
        "dialogues": len(dialogues),
        "turns": len(turns),
        "criteria": sum(len(t.verdicts or {}) for t in turns),
        "unjudged": sum(t.verdicts is None for t in turns),
    }


def format_report(metrics: dict[str, Any]) -> str:
    """The printed summary: headline with intervals, then each breakdown."""
    ci = metrics["ci95"]
    parts = [
        table(["metric", "value [95% CI]"], [(m, pct_ci(metrics[m], ci[m])) for m in ("CSR", "ISR", "SSR")]),
        (f"dialogues {metrics['dialogues']}, turns {metrics['turns']}, criteria {metrics['criteria']}, "
         f"unjudged turns {metrics['unjudged']}"),
        table(["constraint type", "CSR"], [(k, pct(v)) for k, v in metrics["by_type"].items()]),
        table(["turn", "ISR"], [(k, pct(v)) for k, v in enumerate(metrics["by_turn"], 1)]),
        table(["alignment", "ISR"], [(k, pct(v)) for k, v in metrics["by_alignment"].items()]),
        table(["dialogues", "n", "CSR", "ISR", "SSR"],
              [(k, v["dialogues"], pct(v["CSR"]), pct(v["ISR"]), pct(v["SSR"]))
               for k, v in metrics["by_dialogue"].items()]),
    ]
    return "\n\n".join(parts)
