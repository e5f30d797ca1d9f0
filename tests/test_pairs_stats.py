"""Table 4 rates (direct vs reversed pairing, < 5 / >= 5 constraints) and histograms."""

from __future__ import annotations

import json
from pathlib import Path

from rpo.utils.pairs.build import build_rpo_dataset
from rpo.utils.pairs.efficiency import direct_flags, reversed_pair_flags
from rpo.utils.pairs.records import detail_stats
from rpo.utils.text_table import histogram, table


def test_direct_flags_by_hand() -> None:
    full = 0b111
    assert direct_flags([0b011, 0b110], full) == (False, False, False)  # same score, different behaviour
    assert direct_flags([0b011, 0b100], full) == (True, False, False)  # score gap, but neither dominates
    assert direct_flags([0b011, 0b001], full) == (True, True, False)  # dominated, chosen not perfect
    assert direct_flags([0b111, 0b010], full) == (True, True, True)
    assert direct_flags([0b111], full) == (False, False, False)


def test_reversed_pair_flags_check_the_pair_against_its_own_prompt() -> None:
    # chosen 01 over rejected 10, constraint 1 stated reversed: chosen satisfies both, rejected neither
    assert reversed_pair_flags(0b01, 0b10, kept=0b11, flipped=0b10) == (True, True, True)
    # the same pair under the original prompt is valid but not dominated nor perfect
    assert reversed_pair_flags(0b01, 0b10, kept=0b11, flipped=0) == (True, False, False)
    # the only difference left out of the prompt: no gap
    assert reversed_pair_flags(0b01, 0b11, kept=0b01, flipped=0) == (False, False, True)


def _session(sid: str, n: int, turns: list[list[list[bool]]], reversible: bool = True) -> dict:
    return {
        "session_id": sid,
        "profile": {"name": "P", "constraints": [f"rule {k}" for k in range(n)]},
        "reversed_constraints": [f"not rule {k}" if reversible else None for k in range(n)],
        "turns": [
            {
                "query": f"q{t}",
                "reference_response": f"r{t}",
                "samples": [{"response": f"s{t}{i}", "follows": f} for i, f in enumerate(samples)],
            }
            for t, samples in enumerate(turns)
        ],
    }


def test_table4_rates_split_by_constraint_count(tmp_path: Path) -> None:
    T, F = True, False
    sessions = [
        # 3 constraints: one turn with a perfect sample, one with equal scores, one with a single judged sample
        _session("small", 3, [[[T, T, T], [T, F, F]], [[T, T, F], [F, T, T]], [[T, T, T]]]),
        # 5 constraints: a score gap without dominance; then a dominated pair without a perfect chosen
        _session("big", 5, [[[T, T, T, F, F], [F, F, F, T, T]], [[T, T, T, T, F], [T, T, F, F, F]]]),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    counters = detail_stats(path)
    eff = counters.efficiency
    assert eff.direct["all"].turns == 4  # the single-sample turn is not eligible
    assert eff.by_bucket()["direct"] == {
        "<5": {"valid": 0.5, "dominated": 0.5, "perfect": 0.5},
        ">=5": {"valid": 1.0, "dominated": 0.5, "perfect": 0.0},
    }
    assert eff.as_dict() == {
        "direct": {"valid": 0.75, "dominated": 0.5, "perfect": 0.25},
        "reverse": {"valid": 1.0, "dominated": 1.0, "perfect": 1.0},
    }
    table = eff.table()
    assert table.splitlines()[2].split()[:6] == ["direct", "0.75", "0.50", "0.25", "0.50", "0.00"]
    assert table.splitlines()[3].split()[:6] == ["reverse", "1.00", "1.00", "1.00", "1.00", "1.00"]
    # the detail-only statistics agree with what the builder counts
    built = build_rpo_dataset(path, tmp_path / "out", "rpo")
    assert built.efficiency.as_dict() == eff.as_dict() and built.margin_hist == counters.margin_hist
    assert counters.margin_hist == {2: 6, 5: 2}  # all reversible: margin = number of differences


def test_reverse_rates_fall_below_one_when_pairs_are_skipped(tmp_path: Path) -> None:
    T, F = True, False
    path = tmp_path / "d.jsonl"
    # nothing reversible and each response fails something: skip mode emits nothing
    path.write_text(json.dumps(_session("s", 2, [[[T, F], [F, T]]], reversible=False)) + "\n")
    assert detail_stats(path, "skip").efficiency.as_dict()["reverse"] == {
        "valid": 0.0,
        "dominated": 0.0,
        "perfect": 0.0,
    }
    drop = detail_stats(path, "drop")
    assert drop.efficiency.as_dict()["reverse"] == {"valid": 1.0, "dominated": 1.0, "perfect": 1.0}
    assert drop.margin_hist == {1: 2} and drop.left_out_pairs == 2 == drop.non_reversible_pairs


def test_histogram() -> None:
    assert histogram({}) == "  (empty)"
    assert histogram({1: 5, 2: 10, 3: 0}, width=10) == (
        "    1         5  #####\n    2        10  ##########\n    3         0"
    )
    assert table(("kind", "n"), [("a", 10), ("bb", 2)]) == "kind   n\n----  --\na     10\nbb     2"
