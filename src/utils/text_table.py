"""Fixed-width text for terminals, written once: tables and bar histograms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table under a dashed rule: first column left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def histogram(counts: Mapping[Any, int], width: int = 40) -> str:
    """One line per value, in the mapping's order: `    3      1200  ######` (a bar for every
    non-zero count, scaled to the largest)."""
    if not counts:
        return "  (empty)"
    top = max(max(counts.values()), 1)
    return "\n".join(
        f"  {value!s:>3} {count:>9}  {'#' * max(1, round(width * count / top)) if count else ''}".rstrip()
        for value, count in counts.items()
    )
