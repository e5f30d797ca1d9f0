"""One way for a stage to count what it did and print it at the end.

A stage's counts are a dataclass deriving from `Tally`. Simple counters are declared with
`counter(label)` and print, in declaration order, as `label value, ...`. A stage whose summary
needs more (shares, several lines) sets `SUMMARY`: the lines it prints, as `str.format` templates
over its fields and properties, read in one place next to the counts they show. `add` folds in
another tally of the same kind (shards, repeated runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self


def counter(label: str) -> Any:
    """An integer count starting at 0, printed as `label value`."""
    return field(default=0, metadata={"label": label})


class _Attributes:
    """A mapping view of an object's attributes, for `str.format_map`."""

    def __init__(self, obj: object):
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        return getattr(self._obj, name)


@dataclass
class Tally:
    """Counts with a summary; see the module docstring."""

    SUMMARY: ClassVar[tuple[str, ...]] = ()

    def counts(self) -> dict[str, int]:
        """The labelled counters, in declaration order."""
        return {f.metadata["label"]: getattr(self, f.name) for f in fields(self) if "label" in f.metadata}

    def summary_lines(self) -> list[str]:
        """The templates to print: `SUMMARY`, else one line of the labelled counters.

        A subclass adds lines that only some runs have.
        """
        if self.SUMMARY:
            return list(self.SUMMARY)
        labelled = [(f.metadata["label"], f.name) for f in fields(self) if "label" in f.metadata]
        return [", ".join(f"{label} {{{name}}}" for label, name in labelled)]

    def summary(self) -> str:
        values = _Attributes(self)
        return "\n".join(line.format_map(values) for line in self.summary_lines())

    def add(self, other: Self) -> None:
        for f in fields(self):
            if isinstance(getattr(self, f.name), int):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
