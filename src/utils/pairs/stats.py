"""Statistics of preference data: what a construction counted, paper Table 4 sample efficiency,
margins, token lengths.

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

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

from rpo.utils.io import InputError, open_text
from rpo.utils.stats import Tally

QUALITIES = ("valid", "dominated", "perfect")
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

    Turns are tallied by (five or more constraints, direct flags, reversed flags), one counter update
    a turn (pair construction adds one per turn of its input); `direct` and `reverse` derive the rates.
    """

    tally: Counter[tuple[bool, Flags, Flags]] = field(default_factory=Counter)

    def add_turn(self, n_constraints: int, direct: Flags, reverse: Flags) -> None:
        self.tally[(n_constraints >= 5, direct, reverse)] += 1

    @property
    def direct(self) -> dict[str, Rates]:
        """Direct pairing's rates: "all" and per bucket of `bucket`."""
        return self._rates(1)

    @property
    def reverse(self) -> dict[str, Rates]:
        """Reversed pairing's rates: "all" and per bucket of `bucket`."""
        return self._rates(2)

    def _rates(self, method: int) -> dict[str, Rates]:
        table = {b: Rates() for b in ("all", *BUCKETS)}
        for key, count in self.tally.items():
            table["all"].add(key[method], count)
            table[BUCKETS[key[0]]].add(key[method], count)
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
        head = (
            f"{'method':<8} {'valid':>6} {'dominated':>9} {'perfect':>7} {'perf<5':>7} {'perf>=5':>7}  turns"
        )
        lines = [head]
        for method, table in (("direct", self.direct), ("reverse", self.reverse)):
            r = table["all"].rates()
            lo, hi = table["<5"].rates()["perfect"], table[">=5"].rates()["perfect"]
            lines.append(
                f"{method:<8} {r['valid']:>6.2f} {r['dominated']:>9.2f} {r['perfect']:>7.2f} "
                f"{lo:>7.2f} {hi:>7.2f}  {table['all'].turns} (<5: {table['<5'].turns}, >=5: {table['>=5'].turns})"
            )
        return "\n".join(lines)


def format_histogram(hist: Counter[int], width: int = 40) -> str:
    """One line per value: `  3  1200  ######`."""
    if not hist:
        return "  (empty)"
    top = max(hist.values())
    return "\n".join(
        f"  {value:>3} {count:>9}  {'#' * max(1, round(width * count / top))}"
        for value, count in sorted(hist.items())
    )


@dataclass
class PairCounts(Tally):
    """What a construction read and wrote; a selection line appears when pairs were selected."""

    KIND: ClassVar[str] = ""
    SUMMARY: ClassVar[tuple[str, ...]] = (
        "{KIND} records: {pairs}{destination}",
        (
            "sessions {sessions}, turns {turns}, samples {samples} "
            "(unjudged, excluded: {unjudged}; repeated follow vectors, dropped: {duplicates})"
        ),
    )

    sessions: int = 0
    turns: int = 0
    samples: int = 0
    unjudged: int = 0
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
        return format_histogram(self.margin_hist)

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


def iter_dataset(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream records of a JSON-array dataset written one record a line (as this toolkit writes them).

    Files laid out otherwise (pretty-printed, one line) are loaded whole.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open_text(path) as fh:
        first = fh.readline().strip()
        streamed = 0
        if first in ("[", "[]"):
            for lineno, line in enumerate(fh, 2):
                text = line.strip().removesuffix(",")
                if text in ("", "]"):
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    if streamed:
                        raise InputError(f"{path}: line {lineno}: invalid JSON ({err.msg})") from None
                    break
                streamed += 1
                yield record
            else:
                return
        fh.seek(0)
        try:
            data = json.load(fh)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of records")
    yield from data


def record_texts(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of the longest sequence a record trains on: its prompt and its longer response."""
    turns = [(m["from"], m["value"]) for m in record.get("conversations", [])]
    answers = [record[k]["value"] for k in ("chosen", "rejected") if isinstance(record.get(k), dict)]
    if answers:
        turns.append(("gpt", max(answers, key=len)))
    return turns


def percentiles(values: Sequence[int], points: Iterable[float]) -> dict[str, int]:
    """Nearest-rank percentiles (p100 is the maximum)."""
    ordered = sorted(values)
    if not ordered:
        return {}
    out = {}
    for p in points:
        rank = min(len(ordered), max(1, -(-len(ordered) * p // 100)))
        out[f"p{p:g}"] = ordered[int(rank) - 1]
    return out


_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def length_percentiles(
    dataset_path: str | Path,
    tokenizer: str | None = None,
    points: Iterable[float] = (50, 90, 95, 99, 100),
) -> dict[str, Any]:
    """Length percentiles of a dataset's records, to choose LLaMA-Factory's `cutoff_len`.

    The length of a record is its prompt plus its longer response. With a tokenizer path the unit is
    tokens (the tokenizer's chat template when it has one, else the texts joined by newlines);
    without one it is characters. transformers is imported only when a tokenizer is asked for.
    """
    records = iter_dataset(dataset_path)
    if tokenizer is None:
        lengths = [sum(len(text) for _, text in record_texts(r)) for r in records]
        unit = "chars"
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        lengths = []
        for r in records:
            texts = record_texts(r)
            if tok.chat_template:
                ids = tok.apply_chat_template(
                    [{"role": _ROLES.get(role, role), "content": text} for role, text in texts], tokenize=True
                )
                ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
                lengths.append(len(ids))
            else:
                lengths.append(len(tok("\n".join(text for _, text in texts))["input_ids"]))
        unit = "tokens"
    return {"unit": unit, "records": len(lengths), **percentiles(lengths, points)}
