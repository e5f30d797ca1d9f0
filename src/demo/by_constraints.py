"""Where RPO's advantage comes from: the methods experiment split by the number of constraints in play.

The paper's argument (its Table 4): the more constraints a turn holds, the rarer a clean pair is among
directly sampled responses, while reversal makes one from almost any two responses that differ. If that
is where RPO gains, its lead over DPO should grow with the constraints in play. Both sides are split by
the constraints a turn triggers (1–2, 3–4, 5+):

- training side: paper Table 4's rates on each seed's preference samples, direct pairing against the
  pairs reversal emits, pooled over seeds, each with its 95% Wilson interval over turns;
- evaluation side: RPO − DPO on CSR and ISR over the held-out turns with that many constraints, with
  the seeds × sessions interval of `rpo.eval.crossed`. SSR follows a session's turns in order, so it has
  no per-turn split.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rpo.eval.crossed import crossed_difference
from rpo.eval.metrics import Session
from rpo.utils.pairs.build import build_rpo_dataset
from rpo.utils.pairs.efficiency import METHODS, QUALITIES, SampleEfficiency
from scipy.stats import binomtest

GROUPS = (("1-2", 1, 2), ("3-4", 3, 4), ("5+", 5, math.inf))
TURN_METRICS = ("CSR", "ISR")


def group_of(constraints: int) -> str:
    return next(name for name, low, high in GROUPS if low <= constraints <= high)


def efficiency(detail: Path) -> SampleEfficiency:
    """Table 4's tallies of a detail file, from the same construction that builds RPO's pairs."""
    with tempfile.TemporaryDirectory() as scratch:
        return build_rpo_dataset(detail, scratch, "by_constraints").efficiency


def wilson(hits: int, turns: int) -> list[float]:
    if not turns:
        return [0.0, 0.0]
    interval = binomtest(hits, turns).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(interval.low, 4), round(interval.high, 4)]


def table4_by_group(details: Sequence[Path]) -> dict[str, dict]:
    """Per group: turns, and per pairing method each quality's rate with its interval, pooled over seeds."""
    pooled = SampleEfficiency()
    for detail in details:
        pooled.tally.update(efficiency(detail).tally)
    names = [name for name, _, _ in GROUPS]
    by_method = {method: pooled.grouped(method, group_of, names) for method in METHODS}
    return {
        name: {"turns": by_method["direct"][name].turns,
               **{method: {quality: {"rate": round(table[name].rates()[quality], 4),
                                     "ci95": wilson(table[name].hits[quality], table[name].turns)}
                           for quality in QUALITIES}
                  for method, table in by_method.items()}}
        for name in names
    }


def turns_in(sessions: list[Session], group: str) -> list[Session]:
    """Each session with only its judged turns whose constraints in play fall in `group`."""
    return [[turn for turn in session if turn is not None and turn and group_of(len(turn)) == group]
            for session in sessions]


def difference_by_group(grid: dict[int, tuple[list[Session], list[Session]]]) -> dict[str, dict]:
    """Per group: the held-out turns it holds (the same under every seed: the sessions and their queries
    are) and first − second on CSR and ISR over seeds × sessions."""
    seeds = sorted(grid)
    result = {}
    for name, _, _ in GROUPS:
        pairs = [list(zip(turns_in(grid[seed][0], name), turns_in(grid[seed][1], name), strict=True))
                 for seed in seeds]
        turns = sum(len(session) for session, _ in pairs[0]) if pairs else 0
        result[name] = {"turns": turns, **{metric: crossed_difference(pairs, metric) for metric in TURN_METRICS}}
    return result


def by_constraints(details: Sequence[Path], judged: dict[int, dict[str, list[Session]]], first: str,
                   second: str) -> dict:
    """The methods experiment's split: Table 4 by group, and `first` − `second` by group."""
    seeds = [seed for seed in judged if first in judged[seed] and second in judged[seed]]
    return {"groups": [name for name, _, _ in GROUPS], "table4": table4_by_group(details),
            "claim": f"{first} > {second}",
            "difference": difference_by_group({seed: (judged[seed][first], judged[seed][second]) for seed in seeds})}
