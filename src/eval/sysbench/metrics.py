"""SysBench's CSR / ISR / SSR of judged dialogues and every breakdown of its analysis tables.

The rules are those of SysBench's analysis code (`analysis_eval_results` in its `utils.py`), which
its published tables come from:
- a criterion counts as followed only when its verdict is `是`; a turn is followed when every
  verdict is `是` (so `不适用` fails the turn and ends the dialogue's streak; a turn without
  criteria is followed);
- CSR pools every verdict of every turn; by type, the verdicts of each `criteria_type` (the types
  stored with the verdicts);
- ISR is the share of followed turns; by turn, the share of dialogues whose k-th turn is followed;
- SSR is the mean over dialogues of the followed turns from the first until the first failure,
  divided by the dialogue's turns (5); `streak[k]` is the share of dialogues whose first k turns
  are all followed, overall and for related / parallel dialogues;
- the aligned / misaligned table uses its own looser rule: a turn is usable when no verdict is `否`.

Figures are computed only from all turns: a turn left unjudged (or never run) makes the result
incomplete, and an incomplete result carries no CSR / ISR / SSR at all.
"""

from __future__ import annotations

from typing import Any

from rpo.eval.metrics import Session, bootstrap_ci95, score
from rpo.eval.sysbench.data import FOLLOWED, NOT_FOLLOWED, JudgedTurn
from rpo.utils.text_table import table

DIALOGUE_KINDS = {True: "related", False: "parallel"}
HEADLINE = ("CSR", "ISR", "SSR")
DIGITS = 4


def sessions_of(dialogues: list[list[JudgedTurn]]) -> list[Session]:
    return [[turn.followed() for turn in dialogue] for dialogue in dialogues]


def followed(turn: JudgedTurn) -> bool:
    """SysBench's turn rule: every verdict is 是."""
    return all(v == FOLLOWED for v in (turn.verdicts or {}).values())


def usable(turn: JudgedTurn) -> bool:
    """SysBench's rule for its aligned / misaligned table: no verdict is 否."""
    return NOT_FOLLOWED not in (turn.verdicts or {}).values()


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), DIGITS)


def _streak(dialogue: list[JudgedTurn]) -> int:
    run = 0
    for turn in dialogue:
        if not followed(turn):
            break
        run += 1
    return run


def _streak_shares(dialogues: list[list[JudgedTurn]]) -> list[float]:
    longest = max(len(d) for d in dialogues)
    return [_share([_streak(d) >= k for d in dialogues]) for k in range(1, longest + 1)]


def _by_alignment(turns: list[JudgedTurn]) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for turn in turns:
        groups.setdefault(turn.alignment, []).append(usable(turn))
    return {**{a: _share(v) for a, v in sorted(groups.items())}, "total": _share([usable(t) for t in turns])}


def _by_type(turns: list[JudgedTurn]) -> dict[str, float]:
    pooled: dict[str, list[bool]] = {}
    for turn in turns:
        for key, verdict in (turn.verdicts or {}).items():
            pooled.setdefault(turn.criteria[key].criteria_type, []).append(verdict == FOLLOWED)
    return {kind: _share(v) for kind, v in sorted(pooled.items())}


def incompleteness(dialogues: list[list[JudgedTurn]], missing: int = 0) -> str | None:
    """Why figures from these dialogues would not be results (None when every turn is judged)."""
    turns = sum(map(len, dialogues))
    unjudged = sum(t.verdicts is None for d in dialogues for t in d)
    if not turns:
        return "no turn was judged"
    if unjudged or missing:
        parts = [f"{unjudged} of {turns + missing} turns unjudged"] if unjudged else []
        parts += [f"{missing} of {turns + missing} turns not yet answered or judged"] if missing else []
        return ", ".join(parts)
    if not any(t.verdicts for d in dialogues for t in d):
        return "no turn has a criterion: CSR would be computed from nothing"
    return None


def sysbench_metrics(dialogues: list[list[JudgedTurn]], rounds: int = 1000, missing: int = 0) -> dict[str, Any]:
    """The metrics object of `metrics.json` and `score --json` (fractions in [0, 1], 4 places).

    `missing` counts turns of the evaluation that have no record at all (a run not finished).
    Dialogues are taken in `system_id` order, as SysBench's analysis sorts them, so the bootstrap
    intervals do not depend on the order in which a run happened to finish them.
    """
    dialogues = sorted(dialogues, key=lambda dialogue: str(dialogue[0].system_id))
    turns = [turn for dialogue in dialogues for turn in dialogue]
    counts = {
        "dialogues": len(dialogues),
        "turns": len(turns) + missing,
        "criteria": sum(len(t.verdicts or {}) for t in turns),
        "unjudged": sum(t.verdicts is None for t in turns) + missing,
    }
    reason = incompleteness(dialogues, missing)
    if reason is not None:
        return {"complete": False, "incomplete": reason, **dict.fromkeys(HEADLINE), **counts}
    sessions = sessions_of(dialogues)
    longest = max(len(d) for d in dialogues)
    by_dialogue = {}
    for related, name in DIALOGUE_KINDS.items():
        chosen = [d for d in dialogues if d[0].rounds_related is related]
        if chosen:
            by_dialogue[name] = {
                "dialogues": len(chosen),
                "SSR": round(score(sessions_of(chosen))["SSR"], DIGITS),
                "streak": _streak_shares(chosen),
                "by_alignment": _by_alignment([t for d in chosen for t in d]),
            }
    return {
        "complete": True,
        **{name: round(value, DIGITS) for name, value in score(sessions).items()},
        "ci95": bootstrap_ci95(sessions, rounds=rounds),
        "by_type": _by_type(turns),
        "by_turn": [_share([followed(t) for t in turns if t.turn == k]) for k in range(1, longest + 1)],
        "streak": _streak_shares(dialogues),
        "by_alignment": _by_alignment(turns),
        "by_dialogue": by_dialogue,
        **counts,
    }


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals (the four places of the fraction), or n/a."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def format_report(metrics: dict[str, Any], notes: list[str] = ()) -> str:
    """The printed summary: headline with intervals, then each breakdown (or why there are no figures)."""
    counts = (f"dialogues {metrics['dialogues']}, turns {metrics['turns']}, criteria {metrics['criteria']}, "
              f"unjudged turns {metrics['unjudged']}")
    if not metrics["complete"]:
        head = table(["metric", "value"], [(m, "n/a") for m in HEADLINE])
        return "\n\n".join([head, counts, f"INCOMPLETE: {metrics['incomplete']}: no figure is a result", *notes])
    ci = metrics["ci95"]
    parts = [
        table(["metric", "% [95% CI]"],
              [(m, f"{percent(metrics[m])} [{percent(ci[m][0])}, {percent(ci[m][1])}]") for m in HEADLINE]),
        counts,
        *notes,
        table(["constraint type", "CSR %"], [(k, percent(v)) for k, v in metrics["by_type"].items()]),
        table(["turn", "ISR %", "first k turns all followed %"],
              [(k, percent(v), percent(s)) for k, (v, s) in enumerate(zip(metrics["by_turn"], metrics["streak"]), 1)]),
        table(["alignment (usable: no 否)", "all %", *metrics["by_dialogue"]],
              [(a, percent(v), *(percent(d["by_alignment"].get(a)) for d in metrics["by_dialogue"].values()))
               for a, v in metrics["by_alignment"].items()]),
        table(["dialogues", "n", "SSR %"],
              [(k, v["dialogues"], percent(v["SSR"])) for k, v in metrics["by_dialogue"].items()]),
    ]
    return "\n\n".join(parts)
