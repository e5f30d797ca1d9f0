"""Pair selection on the bundled detail file, with exact counts: its 152 RPO pairs have margins
1: 39, 2: 52, 3: 38, 4: 19, 5: 4, and its 61 DPO pairs score gaps 1: 27, 2: 16, 3: 10, 4: 7, 5: 1."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from rpo.utils.io import InputError
from rpo.utils.pairs.build import build_dpo_dataset, build_rpo_dataset, build_rpo_gap_buckets
from rpo.utils.pairs.select import Selection

DEMO = Path(__file__).resolve().parents[1] / "data" / "rpo_data" / "demo_detail.jsonl"


def records(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("full")
    build_rpo_dataset(DEMO, out, "rpo")
    return records(out / "rpo.json")


@pytest.mark.parametrize(
    "flags,written,line",
    [
        ({"min_margin": 2}, 113, "selection: min_margin=2 removed 39"),
        ({"max_margin": 3}, 129, "selection: max_margin=3 removed 23"),
        (
            {"min_margin": 2, "max_margin": 3},
            90,
            "selection: min_margin=2 removed 39; max_margin=3 removed 23",
        ),
        (
            {"min_margin": 3, "max_margin": 3},
            38,
            "selection: min_margin=3 removed 91; max_margin=3 removed 23",
        ),
    ],
)
def test_margin_range(tmp_path: Path, full: list[dict], flags: dict, written: int, line: str) -> None:
    counts = build_rpo_dataset(DEMO, tmp_path, "rpo", **flags)
    kept = records(tmp_path / "rpo.json")
    low, high = flags.get("min_margin", 0), flags.get("max_margin", 99)
    assert kept == [r for r in full if low <= r["margin"] <= high] and counts.pairs == len(kept) == written
    assert sum(counts.margin_hist.values()) == written
    assert counts.summary().splitlines()[2] == line


def test_max_pairs_is_a_reproducible_sample_in_input_order(tmp_path: Path, full: list[dict]) -> None:
    counts = build_rpo_dataset(DEMO, tmp_path / "a", "rpo", max_pairs=50, seed=3)
    again = build_rpo_dataset(DEMO, tmp_path / "b", "rpo", max_pairs=50, seed=3)
    other = build_rpo_dataset(DEMO, tmp_path / "c", "rpo", max_pairs=50, seed=4)
    sample = records(tmp_path / "a" / "rpo.json")
    assert len(sample) == counts.pairs == 50
    assert (tmp_path / "a" / "rpo.json").read_bytes() == (tmp_path / "b" / "rpo.json").read_bytes()
    assert records(tmp_path / "c" / "rpo.json") != sample and other.pairs == 50
    positions = [full.index(r) for r in sample]
    assert positions == sorted(set(positions))  # a subset of the full dataset, in its order
    assert counts.selection == again.selection == "selection: max_pairs=50 (seed 3) removed 102"
    assert counts.margin_hist == Counter(r["margin"] for r in sample)
    # the construction counts are those of the whole input, whatever was selected
    assert (counts.sessions, counts.turns, counts.zero_margin) == (10, 19, 4)


def test_max_pairs_after_the_margin_range_and_above_the_candidates(tmp_path: Path) -> None:
    counts = build_rpo_dataset(DEMO, tmp_path, "rpo", min_margin=4, max_pairs=10)
    assert counts.pairs == 10 and {r["margin"] for r in records(tmp_path / "rpo.json")} <= {4, 5}
    assert counts.selection == "selection: min_margin=4 removed 129; max_pairs=10 (seed 0) removed 13"
    counts = build_rpo_dataset(DEMO, tmp_path, "rpo", max_margin=1, max_pairs=1000)
    assert counts.pairs == 39
    assert counts.selection == "selection: max_margin=1 removed 113; max_pairs=1000 (seed 0) removed 0"


def test_dpo_selection_uses_the_score_gap(tmp_path: Path) -> None:
    counts = build_dpo_dataset(DEMO, tmp_path, "dpo", min_margin=2)
    assert counts.pairs == 34 and counts.selection == "selection: min_margin=2 removed 27"
    counts = build_dpo_dataset(DEMO, tmp_path, "dpo", max_margin=1, max_pairs=5, seed=1)
    assert counts.pairs == len(records(tmp_path / "dpo.json")) == 5
    assert counts.selection == "selection: max_margin=1 removed 34; max_pairs=5 (seed 1) removed 22"
    assert len(build_dpo_dataset(DEMO, tmp_path, "dpo").summary().splitlines()) == 2  # no selection line


def test_selection_sample_keeps_exactly_the_size_asked() -> None:
    for seed in range(20):
        selection = Selection(max_pairs=7, seed=seed)
        selection.plan(Counter({1: 30}))
        assert sum(selection(1) for _ in range(30)) == 7 and selection.sampled_out == 23


def test_gap_buckets_equal_sizes_registered(tmp_path: Path, full: list[dict]) -> None:
    counts = build_rpo_gap_buckets(DEMO, tmp_path, "rpo")
    buckets = {name: records(tmp_path / f"{name}.json") for name in ("rpo_gap_ge3", "rpo_gap_2", "rpo_gap_1")}
    assert {name: len(rs) for name, rs in buckets.items()} == {
        "rpo_gap_ge3": 39,
        "rpo_gap_2": 39,
        "rpo_gap_1": 39,
    }
    assert {r["margin"] for r in buckets["rpo_gap_ge3"]} == {3, 4, 5}
    assert {r["margin"] for r in buckets["rpo_gap_2"]} == {2}
    assert buckets["rpo_gap_1"] == [r for r in full if r["margin"] == 1]  # the smallest bucket, whole
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert {name: info[name]["file_name"] for name in buckets} == {name: f"{name}.json" for name in buckets}
    assert all(info[name]["columns"]["margin"] == "margin" for name in buckets)
    assert counts.pairs == 117 and counts.margin_hist[1] == 39
    assert counts.selection.splitlines() == [
        "gap buckets, 39 records each (seed 0):",
        f"  rpo_gap_ge3 (margin >= 3): 39 of 61 -> {tmp_path / 'rpo_gap_ge3.json'}",
        f"  rpo_gap_2 (margin = 2): 39 of 52 -> {tmp_path / 'rpo_gap_2.json'}",
        f"  rpo_gap_1 (margin = 1): 39 of 39 -> {tmp_path / 'rpo_gap_1.json'}",
    ]
    capped = build_rpo_gap_buckets(DEMO, tmp_path / "capped", "rpo", max_pairs=20, seed=5)
    assert capped.pairs == 60 and capped.selection.startswith("gap buckets, 20 records each (seed 5):")


def test_gap_buckets_refuse_an_empty_bucket(tmp_path: Path) -> None:
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    one = tmp_path / "one.jsonl"
    session = json.loads(lines[0])
    session["turns"] = session["turns"][:1]
    session["turns"][0]["samples"] = session["turns"][0]["samples"][:2]
    one.write_text(json.dumps(session) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        build_rpo_gap_buckets(one, tmp_path / "out", "rpo")
    assert str(err.value).startswith(f"{one} gives no pairs for rpo_gap_")
    assert not (tmp_path / "out").exists()
