"""Paper Table 4, sample efficiency of direct vs reversed pairing.

Follow vectors are bit masks here: bit k is set when the response follows constraint k. A turn's
sampled responses are judged once; the question Table 4 asks is, per turn (query), whether a pairing
method can build a pair of each quality from those responses:

- **valid**: a pair with a score gap. Direct pairing needs two responses whose numbers of followed
  constraints differ; reversed pairing needs a pair it actually emits (margin >= 1 on its prompt).
- **dominated**: a pair whose chosen is not worse than the rejected on any constraint of the pair's
  prompt, and better on at least one. Direct: one response's followed set strictly contains another's.
- **perfect**: a pair whose chosen follows every constraint of the pair's prompt. Direct: some response
  follows all constraints and another does not.

Rates are the share of eligible turns (turns with at least two judged samples) where such a pair exists,
also split by the number of constraints in play (< 5 and >= 5), as the paper splits "perfect": a turn
with triggered constraints counts only those. Reversed rates are measured on the pairs the
construction emits, not assumed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from rpo.utils.text_table import table

QUALITIES = ("valid", "dominated", "perfect")
METHODS = {"direct": 1, "reverse": 2}  # each method's flags in a tally key
BUCKETS = ("<5", ">=5")


def bucket(n_constraints: int) -> str:
    """The paper's split of Table 4: fewer than five constraints, or five and more."""
    return "<5" if n_constraints < 5 else ">=5"


def direct_flags(masks: Sequence[int], full: int) -> tuple[bool, bool, bool]:
    """(valid, dominated, perfect) for pairing a turn's distinct follow masks as they were sampled."""
    valid = len({m.bit_count() for m in masks}) > 1
    dominated = valid and any((a & b) in (a, b) and a != b for a, b in combinations(masks, 2))
    perfect = len(masks) > 1 and full in masks
    return valid, dominated, perfect


def reversed_pair_flags(chosen: int, rejected: int, kept: int, flipped: int) -> tuple[bool, bool, bool]:
    """(valid, dominated, perfect) of one reversed pair on its own prompt.

    `kept` masks the constraints in the pair's prompt, `flipped` those of them stated reversed.
    A response satisfies prompt item k when it follows k and k is not flipped, or fails k and it is.
    """
    chosen_ok = (chosen ^ flipped) & kept
    rejected_ok = (rejected ^ flipped) & kept
    gap = (chosen_ok ^ rejected_ok).bit_count()
    dominated = gap > 0 and rejected_ok & ~chosen_ok == 0
    return gap > 0, dominated, chosen_ok == kept


@dataclass
class Rates:
    """Counts of eligible turns and of those where a pair of each quality exists."""

    turns: int = 0
    hits: Counter[str] = field(default_factory=Counter)

    def add(self, flags: tuple[bool, bool, bool], count: int = 1) -> None:
        """Count `count` turns with these (valid, dominated, perfect) flags."""
        self.turns += count
        for name, flag in zip(QUALITIES, flags):
            self.hits[name] += flag * count

    def rates(self) -> dict[str, float]:
        return {name: (self.hits[name] / self.turns if self.turns else 0.0) for name in QUALITIES}


Flags = tuple[bool, bool, bool]


@dataclass
class SampleEfficiency:
    """Table 4 for direct vs reversed pairing, overall and by number of constraints.

    Turns are tallied by (constraints in play, direct flags, reversed flags), one counter update
    a turn (pair construction adds one per turn of its input); `direct` and `reverse` derive the rates.
    """

    tally: Counter[tuple[int, Flags, Flags]] = field(default_factory=Counter)

    def add_turn(self, n_constraints: int, direct: Flags, reverse: Flags) -> None:
        self.tally[(n_constraints, direct, reverse)] += 1

    @property
    def direct(self) -> dict[str, Rates]:
        """Direct pairing's rates: "all" and per bucket of `bucket`."""
        return self._rates("direct")

    @property
    def reverse(self) -> dict[str, Rates]:
        """Reversed pairing's rates: "all" and per bucket of `bucket`."""
        return self._rates("reverse")

    def _rates(self, method: str) -> dict[str, Rates]:
        return {**self.grouped(method, lambda _: "all", ("all",)), **self.grouped(method, bucket, BUCKETS)}

    def grouped(self, method: str, group: Callable[[int], str], names: Sequence[str]) -> dict[str, Rates]:
        """Rates of one method ("direct" or "reverse") per group (one of `names`) of the number of
        constraints in play; a group without turns has empty rates."""
        index = METHODS[method]
        table = {name: Rates() for name in names}
        for key, count in self.tally.items():
            table[group(key[0])].add(key[index], count)
        return table

    def as_dict(self) -> dict[str, dict[str, float]]:
        """The `sample_efficiency` block of the demo report: overall rates per method."""
        return {"direct": self.direct["all"].rates(), "reverse": self.reverse["all"].rates()}

    def by_bucket(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            method: {b: table[b].rates() for b in BUCKETS}
            for method, table in (("direct", self.direct), ("reverse", self.reverse))
        }

    def table(self) -> str:
        """Text table: valid, dominated, perfect, then perfect split by < 5 and >= 5 constraints."""
        rows = []
        for method, rates in (("direct", self.direct), ("reverse", self.reverse)):
            r = rates["all"].rates()
            lo, hi = rates["<5"].rates()["perfect"], rates[">=5"].rates()["perfect"]
            turns = f"{rates['all'].turns} (<5: {rates['<5'].turns}, >=5: {rates['>=5'].turns})"
            rows.append((method, *(f"{x:.2f}" for x in (r["valid"], r["dominated"], r["perfect"], lo, hi)), turns))
        return table(("method", "valid", "dominated", "perfect", "perf<5", "perf>=5", "turns"), rows)
