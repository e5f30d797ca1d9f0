"""What a pair construction read and wrote: the counters each builder keeps and prints at the end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from rpo.utils.pairs.efficiency import SampleEfficiency
from rpo.utils.stats import Tally
from rpo.utils.text_table import histogram


@dataclass
class PairCounts(Tally):
    """What a construction read and wrote; a selection line appears when pairs were selected."""

    KIND: ClassVar[str] = ""
    SUMMARY: ClassVar[tuple[str, ...]] = (
        "{KIND} records: {pairs}{destination}",
        (
            "sessions {sessions}, turns {turns}, samples {samples} "
            "(unjudged, excluded: {unjudged}, of which cut at the token cap: {truncated}; "
            "repeated follow vectors, dropped: {duplicates})"
        ),
    )

    sessions: int = 0
    turns: int = 0
    samples: int = 0
    unjudged: int = 0
    truncated: int = 0  # unjudged because the server cut them at the token cap
    duplicates: int = 0
    pairs: int = 0
    output: str | None = None
    selection: str = ""

    @property
    def destination(self) -> str:
        return f" -> {self.output}" if self.output else ""

    def summary_lines(self) -> list[str]:
        lines = list(self.SUMMARY)
        if self.selection:
            lines.insert(2, "{selection}")
        return lines


@dataclass
class RpoCounts(PairCounts):
    """RPO adds what the non-reversible rule did, the margins written and Table 4.

    The non-reversible counts are of pairs, before any selection, and add up: every pair whose chosen
    fails a constraint without a reversal is emitted with it left out, skipped, or not emitted
    because nothing else tells its responses apart."""

    KIND: ClassVar[str] = "rpo"
    SUMMARY: ClassVar[tuple[str, ...]] = PairCounts.SUMMARY + (
        (
            "non-reversible constraints: {non_reversible_pairs} pairs whose chosen fails one: "
            "{left_out_pairs} emitted with it left out of the prompt, {skipped_pairs} skipped, "
            "{zero_margin} not emitted (margin 0 without it)"
        ),
        "margin histogram:",
        "{histogram}",
        "sample efficiency (paper Table 4, share of turns with >= 2 judged samples):",
        "{table}",
    )

    non_reversible_pairs: int = 0
    left_out_pairs: int = 0
    skipped_pairs: int = 0
    zero_margin: int = 0
    margin_hist: Counter[int] = field(default_factory=Counter)
    efficiency: SampleEfficiency = field(default_factory=SampleEfficiency)

    @property
    def histogram(self) -> str:
        return histogram(dict(sorted(self.margin_hist.items())))

    @property
    def table(self) -> str:
        return self.efficiency.table()


@dataclass
class DpoCounts(PairCounts):
    KIND: ClassVar[str] = "dpo"


@dataclass
class KtoCounts(PairCounts):
    KIND: ClassVar[str] = "kto"
    SUMMARY: ClassVar[tuple[str, ...]] = PairCounts.SUMMARY + (
        "desirable {desirable}, undesirable {undesirable}",
    )

    desirable: int = 0
    undesirable: int = 0
