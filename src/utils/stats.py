"""Counters that every stage prints at its end, counted and printed one way.

A stage's counters are a dataclass deriving from `Tally` whose integer fields are declared with
`counter(label)`; `summary()` prints them in declaration order as `label value, ...`, and `add`
folds in another tally of the same kind (shards, workers, repeated runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self


def counter(label: str) -> Any:
    """An integer count starting at 0, printed as `label value`."""
    return field(default=0, metadata={"label": label})


@dataclass
class Tally:
    """Base of every stage's counters; see the module docstring."""

    def counts(self) -> dict[str, int]:
        """The labelled counts, in declaration order."""
        return {f.metadata["label"]: getattr(self, f.name) for f in fields(self) if "label" in f.metadata}

    def summary(self) -> str:
        return ", ".join(f"{label} {value}" for label, value in self.counts().items())

    def add(self, other: Self) -> None:
        for f in fields(self):
            if "label" in f.metadata:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
