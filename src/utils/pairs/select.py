"""Pair selection after construction: a gap range, then a seeded sample of at most `max_pairs`.

Datasets are streamed, so the sample is drawn in two passes without holding records: the first
counts the pairs in range (`plan`), the second offers them in the same order and keeps each with
probability (still needed) / (still to come), which keeps exactly `max_pairs` of them, every subset
of that size equally likely, the same ones for the same seed (selection sampling, Knuth's Algorithm S).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Selection:
    """Keep pairs whose gap lies in [min_margin, max_margin], then `max_pairs` of those at random.

    Called with each pair's gap, in order; counts what each filter removed.
    """

    min_margin: int | None = None
    max_margin: int | None = None
    max_pairs: int | None = None
    seed: int = 0
    below_min: int = 0
    above_max: int = 0
    sampled_out: int = 0
    _still_to_come: int = 0
    _still_needed: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.min_margin is not None and self.max_margin is not None and self.min_margin > self.max_margin:
            raise ValueError(f"min_margin {self.min_margin} is above max_margin {self.max_margin}")

    @property
    def samples(self) -> bool:
        """Whether a first pass must count the candidates (`plan`) before pairs are offered."""
        return self.max_pairs is not None

    def in_range(self, gap: int) -> bool:
        return (self.min_margin is None or gap >= self.min_margin) and (
            self.max_margin is None or gap <= self.max_margin
        )

    def candidates(self, gaps: Counter[int]) -> int:
        return sum(count for gap, count in gaps.items() if self.in_range(gap))

    def plan(self, gaps: Counter[int]) -> None:
        """Prepare the sample from the first pass's gap counts: `max_pairs` of the candidates, or all
        of them when there are fewer."""
        self._still_to_come = self.candidates(gaps)
        self._still_needed = min(self.max_pairs or 0, self._still_to_come)
        self._rng = random.Random(self.seed)

    def __call__(self, gap: int) -> bool:
        if self.min_margin is not None and gap < self.min_margin:
            self.below_min += 1
            return False
        if self.max_margin is not None and gap > self.max_margin:
            self.above_max += 1
            return False
        if self.max_pairs is None:
            return True
        keep = self._rng.random() * self._still_to_come < self._still_needed
        self._still_to_come -= 1
        self._still_needed -= keep
        self.sampled_out += not keep
        return keep

    @property
    def active(self) -> bool:
        return (self.min_margin, self.max_margin, self.max_pairs) != (None, None, None)

    def summary(self) -> str:
        """What each filter used removed, e.g. `selection: min_margin=2 removed 40; max_pairs=50
        (seed 0) removed 12`."""
        parts = []
        if self.min_margin is not None:
            parts.append(f"min_margin={self.min_margin} removed {self.below_min}")
        if self.max_margin is not None:
            parts.append(f"max_margin={self.max_margin} removed {self.above_max}")
        if self.max_pairs is not None:
            parts.append(f"max_pairs={self.max_pairs} (seed {self.seed}) removed {self.sampled_out}")
        return "selection: " + "; ".join(parts)
