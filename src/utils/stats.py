"""One way for a stage to count what it did and print it at the end.

A stage's counts are a dataclass deriving from `Tally`: plain fields it increments, and `SUMMARY`,
the lines it prints, as `str.format` templates over its fields and properties. A summary is then
read in one place, next to the counts it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class _Attributes:
    """A mapping view of an object's attributes, for `str.format_map`."""

    def __init__(self, obj: object):
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        return getattr(self._obj, name)


@dataclass
class Tally:
    """Counts with a summary: subclasses add the fields and set `SUMMARY`."""

    SUMMARY: ClassVar[tuple[str, ...]] = ()

    def summary_lines(self) -> list[str]:
        """The templates to print; a subclass adds lines that only some runs have."""
        return list(self.SUMMARY)

    def summary(self) -> str:
        fields = _Attributes(self)
        return "\n".join(line.format_map(fields) for line in self.summary_lines())
