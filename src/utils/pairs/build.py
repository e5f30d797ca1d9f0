"""Pair datasets streamed from a detail file into `{output_dir}/{dataset_name}.json`, then registered.

Sessions are read, turned into records and written one at a time, so memory stays flat however
large the input; the file is written to a temp file and renamed, so a failed run leaves the previous
dataset as it was. With a `max_pairs` sample the detail file is read twice (count, then select).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path

import orjson
from rpo.utils.dataset_registry import register_dataset
from rpo.utils.io import InputError, JsonArrayWriter
from rpo.utils.pairs.counts import DpoCounts, KtoCounts, PairCounts, RpoCounts
from rpo.utils.pairs.records import (
    Record,
    dpo_gaps,
    dpo_records,
    kto_records,
    read_sessions,
    rpo_gaps,
    rpo_records,
)
from rpo.utils.pairs.rule import NonReversible, PromptConstraints
from rpo.utils.pairs.select import Selection
from rpo.utils.schema import SessionDetail

GAP_BUCKETS = (("gap_ge3", 3, None), ("gap_2", 2, 2), ("gap_1", 1, 1))
"""Paper Table 2's training sets: (name suffix, least margin, largest margin)."""


def _write(
    detail_path: str | Path,
    output_dir: str | Path,
    dataset_name: str,
    kind: str,
    counts: PairCounts,
    records_of: Callable[[SessionDetail], Iterable[Record]],
) -> None:
    output = Path(output_dir) / f"{dataset_name}.json"
    with JsonArrayWriter(output) as writer:
        for session in read_sessions(detail_path):
            records = [orjson.dumps(record) for record in records_of(session)]
            writer.write_encoded(b",\n".join(records), len(records))
    register_dataset(output_dir, dataset_name, kind)
    counts.output = str(output)


class EmptyGapBucket(InputError):
    """The detail file gives no pair for one of the gap buckets, so equal-size buckets would be empty."""


GapsOf = Callable[[SessionDetail], Iterable[int]]


def _gap_counts(detail_path: str | Path, gaps_of: GapsOf) -> Counter[int]:
    """The first pass of a sample: how many pairs of each gap the detail file gives."""
    return Counter(gap for session in read_sessions(detail_path) for gap in gaps_of(session))


def _planned(selection: Selection, detail_path: str | Path, gaps_of: GapsOf) -> Selection | None:
    """The selection ready to be offered pairs (its sample planned on a first pass), or None when
    no selection flag is used."""
    if selection.samples:
        selection.plan(_gap_counts(detail_path, gaps_of))
    return selection if selection.active else None


def build_rpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "rpo",
    non_reversible: NonReversible = "drop",
    prompt_constraints: PromptConstraints = "triggered",
    min_margin: int | None = None,
    max_margin: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> RpoCounts:
    """Build the RPO ranking dataset with its margin column and register it in `dataset_info.json`.

    `min_margin`, `max_margin` and `max_pairs` (a sample drawn with `seed`) select among the pairs.
    """
    selection = _planned(
        Selection(min_margin, max_margin, max_pairs, seed),
        detail_path,
        lambda session: rpo_gaps(session, RpoCounts(), non_reversible),
    )
    counts = RpoCounts()
    _write(
        detail_path,
        output_dir,
        dataset_name,
        "rpo",
        counts,
        lambda session: rpo_records(session, counts, non_reversible, prompt_constraints, selection),
    )
    counts.selection = selection.summary() if selection else ""
    return counts


def build_dpo_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "dpo",
    min_margin: int | None = None,
    max_margin: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> DpoCounts:
    """Build the DPO baseline ranking dataset (no margin column) and register it.

    The selection options are `build_rpo_dataset`'s, with a pair's gap being how many more
    constraints its chosen follows.
    """
    selection = _planned(
        Selection(min_margin, max_margin, max_pairs, seed),
        detail_path,
        lambda session: dpo_gaps(session, DpoCounts()),
    )
    counts = DpoCounts()
    _write(
        detail_path,
        output_dir,
        dataset_name,
        "dpo",
        counts,
        lambda session: dpo_records(session, counts, selection),
    )
    counts.selection = selection.summary() if selection else ""
    return counts


def build_kto_dataset(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "kto",
) -> KtoCounts:
    """Build the KTO dataset (a `kto_tag` column, not ranking) and register it."""
    counts = KtoCounts()
    _write(detail_path, output_dir, dataset_name, "kto", counts, lambda session: kto_records(session, counts))
    return counts


def build_rpo_gap_buckets(
    detail_path: str | Path = "data/rpo_data/demo_detail.jsonl",
    output_dir: str | Path = "data",
    dataset_name: str = "rpo",
    non_reversible: NonReversible = "drop",
    prompt_constraints: PromptConstraints = "triggered",
    max_pairs: int | None = None,
    seed: int = 0,
) -> RpoCounts:
    """Paper Table 2's three RPO datasets, margin >= 3, = 2 and = 1, of equal size, each registered.

    The size is that of the smallest bucket (at most `max_pairs`); each bucket is a seeded sample of
    its pairs. They are written as `{dataset_name}_gap_ge3`, `_gap_2` and `_gap_1`.
    """
    gaps = _gap_counts(detail_path, lambda session: rpo_gaps(session, RpoCounts(), non_reversible))
    buckets = {f"{dataset_name}_{suffix}": Selection(low, high, seed=seed) for suffix, low, high in GAP_BUCKETS}
    smallest = min(buckets.items(), key=lambda item: item[1].candidates(gaps))
    size = smallest[1].candidates(gaps)
    if size == 0:
        raise EmptyGapBucket(f"{detail_path} gives no pairs for {smallest[0]}, so every bucket would be empty")
    size = size if max_pairs is None else min(size, max_pairs)
    for bucket in buckets.values():
        bucket.max_pairs = size
        bucket.plan(gaps)

    def bucket_of(gap: int) -> str:
        return next(bucket_name for bucket_name, bucket in buckets.items() if bucket.in_range(gap))

    counts = RpoCounts()
    output = Path(output_dir)
    with ExitStack() as stack:
        writers = {
            bucket_name: stack.enter_context(JsonArrayWriter(output / f"{bucket_name}.json"))
            for bucket_name in buckets
        }
        for session in read_sessions(detail_path):
            records = rpo_records(session, counts, non_reversible, prompt_constraints, lambda gap: buckets[bucket_of(gap)](gap))
            for record in records:
                bucket_name = bucket_of(record["margin"])
                writers[bucket_name].write_encoded(orjson.dumps(record))
    for bucket_name in buckets:
        register_dataset(output_dir, bucket_name, "rpo")
    counts.selection = f"gap buckets, {size} records each (seed {seed}):\n" + "\n".join(
        f"  {bucket_name} ({_gap_range(bucket)}): {writers[bucket_name].count} of {bucket.candidates(gaps)}"
        f" -> {output / f'{bucket_name}.json'}"
        for bucket_name, bucket in buckets.items()
    )
    return counts


def _gap_range(selection: Selection) -> str:
    if selection.min_margin == selection.max_margin:
        return f"margin = {selection.min_margin}"
    return f"margin >= {selection.min_margin}"
