"""SysBench metrics over judged sessions, and bootstrap confidence intervals for any metric.

A session is a list of turns; a turn is its list of per-constraint verdicts, or `None` when the
turn could not be judged. A verdict is `True` (followed: SysBench's `是`), `False` (not followed:
`否`) or `None` (any other answer, such as SysBench's occasional `不适用`).

The rules are SysBench's own analysis (`analysis_eval_results`), which its published tables come from:
- CSR: followed verdicts over all verdicts of all turns, pooled (only `True` counts as followed);
- ISR: share of turns whose verdicts are all `True` (a `不适用` fails the turn; a turn without
  criteria is followed);
- SSR: per session, the followed turns from the first until the first failure, divided by the
  session's turns (5 in SysBench), averaged over sessions.
Unjudged turns are left out of CSR and ISR; a session whose streak reaches an unjudged turn has an
unknown SSR and is left out of it (a failure before the gap still settles it).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any, TypeVar

Verdict = bool | None
Turn = list[Verdict]
Session = list[Turn | None]
U = TypeVar("U")


def turn_followed(turn: Turn) -> bool:
    return all(v is True for v in turn)


def csr(sessions: list[Session]) -> float:
    verdicts = [v for session in sessions for turn in session if turn is not None for v in turn]
    return sum(v is True for v in verdicts) / len(verdicts) if verdicts else 0.0


def isr(sessions: list[Session]) -> float:
    turns = [turn_followed(turn) for session in sessions for turn in session if turn is not None]
    return sum(turns) / len(turns) if turns else 0.0


def streak(session: Session) -> float | None:
    """Fully followed turns from the first until the first failure ÷ turns; None if a gap hides it."""
    run = 0
    for turn in session:
        if turn is None:
            return None
        if not turn_followed(turn):
            break
        run += 1
    return run / len(session)


def ssr(sessions: list[Session]) -> float:
    scored = [s for s in (streak(session) for session in sessions if session) if s is not None]
    return sum(scored) / len(scored) if scored else 0.0


METRICS: dict[str, Callable[[list[Session]], float]] = {"CSR": csr, "ISR": isr, "SSR": ssr}


def score(sessions: list[Session]) -> dict[str, float]:
    return {name: fn(sessions) for name, fn in METRICS.items()}


def bootstrap_ci95(
    units: Sequence[U],
    metrics: dict[str, Callable[[list[U]], Any]] | None = None,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[str, list[float]]:
    """2.5th and 97.5th percentiles of each metric over the units resampled with replacement.

    Units are what was sampled independently (sessions, benchmark rows), so that the interval
    reflects the correlation of turns within a session. The default metrics are SysBench's.
    """
    metrics = metrics if metrics is not None else METRICS
    if not units:
        return {name: [0.0, 0.0] for name in metrics}
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(rounds):
        resample = [units[rng.randrange(len(units))] for _ in units]
        for name, fn in metrics.items():
            draws[name].append(fn(resample))
    ci = {}
    for name, values in draws.items():
        values.sort()
        ci[name] = [round(values[int(0.025 * rounds)], 4), round(values[int(0.975 * rounds) - 1], 4)]
    return ci


Z95 = NormalDist().inv_cdf(0.975)


def ratio_parts(session: Session, metric: str) -> tuple[float, float] | None:
    """A session's share of a pooled metric, as (numerator, denominator); None when it has none.

    CSR pools verdicts, ISR judged turns, SSR sessions whose streak is known (each weighs 1).
    """
    if metric == "CSR":
        verdicts = [v for turn in session if turn is not None for v in turn]
        return sum(v is True for v in verdicts), len(verdicts)
    if metric == "ISR":
        turns = [turn_followed(turn) for turn in session if turn is not None]
        return sum(turns), len(turns)
    if metric == "SSR":
        run = streak(session) if session else None
        return None if run is None else (run, 1)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def unit_influences(pairs: Sequence[tuple[Session, Session]], metric: str) -> tuple[float, list[float | None]] | None:
    """The first system's `metric` minus the second's over the same units, and each unit's influence on it.

    Both metrics are pooled ratios Σx / Σn; by the delta method a unit moves the difference by
    u = (x₁ − R₁n₁)/n̄₁ − (x₂ − R₂n₂)/n̄₂. A unit where either system has no share (an unknown SSR)
    has no influence (None). None when either system has nothing to pool.
    """
    parts = [(ratio_parts(first, metric), ratio_parts(second, metric)) for first, second in pairs]
    kept = [(a, b) for a, b in parts if a is not None and b is not None]
    totals = [(sum(p[side][0] for p in kept), sum(p[side][1] for p in kept)) for side in (0, 1)]
    if not kept or not totals[0][1] or not totals[1][1]:
        return None
    rates = [x / n for x, n in totals]
    mean_n = [n / len(kept) for _, n in totals]
    influence = [
        None if a is None or b is None else (a[0] - rates[0] * a[1]) / mean_n[0] - (b[0] - rates[1] * b[1]) / mean_n[1]
        for a, b in parts
    ]
    return rates[0] - rates[1], influence


def paired_difference(pairs: Sequence[tuple[Session, Session]], metric: str) -> dict[str, Any]:
    """`metric` of the first system minus that of the second over the same units, with a 95% interval.

    Each pair is one unit (a session, or a seed × session) answered by both systems, so the
    interval reflects what the two have in common: the difference ± 1.96 · sd(u) / √N over the
    units' influences u (`unit_influences`). Units where either system has no share (an unknown
    SSR) are left out of that metric.
    """
    pooled = unit_influences(pairs, metric)
    if pooled is None:
        kept = sum(ratio_parts(a, metric) is not None and ratio_parts(b, metric) is not None for a, b in pairs)
        return {"diff": 0.0, "ci95": [0.0, 0.0], "units": kept}
    diff, influences = pooled
    influence = [u for u in influences if u is not None]
    units = len(influence)
    half = Z95 * statistics.stdev(influence) / math.sqrt(units) if units > 1 else 0.0
    return {"diff": round(diff, 4), "ci95": [round(diff - half, 4), round(diff + half, 4)], "units": units}
