"""Paired differences of two systems trained under several seeds and scored on the same held-out sessions.

Seeds and sessions are crossed: every seed's two systems answer every session. A difference then varies
with the seed (training noise: a seed's pair of models may differ more or less than another's), with
the session (some sessions favour one system under every seed) and with their interaction. Treating
the seed × session units as independent ignores the first two and gives intervals that shrink with more
sessions however few seeds there are. Here the variance of the pooled difference is the two-way
cluster-robust one (Cameron, Gelbach and Miller 2011) over the delta-method influences u of
`metrics.paired_difference`:

    V = V_seed + V_session − V_unit

(each the sandwich variance clustered by seed, by session, and by unit, with its G / (G − 1)
correction), and the interval is diff ± t(S − 1) · √V, with S the number of seeds. For one seed there
is no seed variance to estimate: the interval is `paired_difference`'s, over sessions only.

The same influences give the variance components (method of moments on the seed × session table),
from which `half_width` projects the interval of a run with other numbers of seeds and sessions and
`seeds_needed` finds the seeds a target width takes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from rpo.eval.metrics import Session, paired_difference, unit_influences
from scipy.stats import t as student_t

Pair = tuple[Session, Session]


def influences(grid: Sequence[Sequence[Pair]], metric: str) -> tuple[float, list[list[float | None]]]:
    """The pooled difference of `metric` and each unit's influence on it (`unit_influences`), seed by seed
    (None where a system has no share of the metric, an unknown SSR, or where nothing pools)."""
    pooled = unit_influences([pair for row in grid for pair in row], metric)
    if pooled is None:
        return 0.0, [[None for _ in row] for row in grid]
    diff, flat = pooled
    rows, start = [], 0
    for row in grid:
        rows.append(flat[start : start + len(row)])
        start += len(row)
    return diff, rows


def clustered(sums: list[float], units: int) -> float:
    """Sandwich variance of a mean of `units` influences from per-cluster sums, with G / (G − 1)."""
    groups = len(sums)
    return groups / (groups - 1) * sum(s * s for s in sums) / units**2 if groups > 1 else 0.0


def components(table: list[list[float | None]]) -> dict[str, float]:
    """Variance components of one unit's influence, u = seed + session + residual, by the method of
    moments on the sessions every seed has (two-way ANOVA without replication; negatives become 0)."""
    columns = [k for k in range(len(table[0])) if all(row[k] is not None for row in table)] if table else []
    seeds, sessions = len(table), len(columns)
    if seeds < 2 or sessions < 2:
        return {"seed": 0.0, "session": 0.0, "residual": 0.0}
    grid = [[row[k] for k in columns] for row in table]
    grand = statistics.fmean(v for row in grid for v in row)
    row_means = [statistics.fmean(row) for row in grid]
    col_means = [statistics.fmean(row[k] for row in grid) for k in range(sessions)]
    ms_seed = sessions * sum((m - grand) ** 2 for m in row_means) / (seeds - 1)
    ms_session = seeds * sum((m - grand) ** 2 for m in col_means) / (sessions - 1)
    ms_residual = sum((grid[s][k] - row_means[s] - col_means[k] + grand) ** 2
                      for s in range(seeds) for k in range(sessions)) / ((seeds - 1) * (sessions - 1))
    return {"seed": max(0.0, (ms_seed - ms_residual) / sessions),
            "session": max(0.0, (ms_session - ms_residual) / seeds), "residual": ms_residual}


def critical(seeds: int) -> float:
    """The 97.5% quantile of Student's t with seeds − 1 degrees of freedom."""
    return float(student_t.ppf(0.975, seeds - 1))


def half_width(parts: dict[str, float], seeds: int, sessions: int) -> float:
    """The projected half-width of the 95% interval with `seeds` seeds and `sessions` sessions."""
    variance = parts["seed"] / seeds + parts["session"] / sessions + parts["residual"] / (seeds * sessions)
    return critical(seeds) * math.sqrt(variance)


def seeds_needed(parts: dict[str, float], sessions: int, target: float, most: int = 1000) -> int | None:
    """The fewest seeds (at least 2) whose projected half-width with `sessions` sessions is at most
    `target`; None when even `most` seeds would not do."""
    return next((seeds for seeds in range(2, most + 1) if half_width(parts, seeds, sessions) <= target), None)


def crossed_difference(grid: Sequence[Sequence[Pair]], metric: str) -> dict[str, Any]:
    """`metric` of the first system minus the second's over seeds × sessions (`grid[seed][session]`, the
    same sessions in every row), with its 95% interval and the variance components behind it."""
    if len(grid) == 1:
        return {**paired_difference(grid[0], metric), "seeds": 1, "components": None}
    diff, table = influences(grid, metric)
    units = [(s, k, u) for s, row in enumerate(table) for k, u in enumerate(row) if u is not None]
    count = len(units)
    if count < 2:
        return {"diff": round(diff, 4), "ci95": [round(diff, 4)] * 2, "units": count, "seeds": len(grid),
                "components": None}
    by_seed: dict[int, float] = {}
    by_session: dict[int, float] = {}
    for s, k, u in units:
        by_seed[s] = by_seed.get(s, 0.0) + u
        by_session[k] = by_session.get(k, 0.0) + u
    v_seed, v_session = clustered(list(by_seed.values()), count), clustered(list(by_session.values()), count)
    v_unit = clustered([u for _, _, u in units], count)
    variance = v_seed + v_session - v_unit
    if variance <= 0:  # sampling noise can make the sum negative: the larger one-way variance then
        variance = max(v_seed, v_session)
    half = critical(len(by_seed)) * math.sqrt(variance)
    return {"diff": round(diff, 4), "ci95": [round(diff - half, 4), round(diff + half, 4)], "units": count,
            "seeds": len(by_seed), "components": {k: round(v, 6) for k, v in components(table).items()}}
