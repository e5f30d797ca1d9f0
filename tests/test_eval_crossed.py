"""Paired differences over seeds × sessions (`rpo.eval.crossed`), against values computed by hand."""

import math

import pytest
from rpo.eval.crossed import components, critical, crossed_difference, half_width, influences, seeds_needed
from rpo.eval.metrics import paired_difference

FOLLOWED, FAILED = [[True]], [[False]]  # one-turn sessions with one verdict


def grid_of(differences: list[list[int]]) -> list[list[tuple]]:
    """Seed × session pairs whose ISR difference per unit is the given 1, 0 or -1 (first minus second)."""
    cell = {1: (FOLLOWED, FAILED), 0: (FAILED, FAILED), -1: (FAILED, FOLLOWED)}
    return [[cell[d] for d in row] for row in differences]


def test_two_seeds_three_sessions_by_hand():
    # per-unit differences d: seed 0 [1, 1, 0], seed 1 [1, 0, 0]; pooled difference 3/6 = 0.5, and
    # with one verdict per unit the influence is u = d - 0.5: [.5, .5, -.5] and [.5, -.5, -.5]
    grid = grid_of([[1, 1, 0], [1, 0, 0]])
    diff, table = influences(grid, "ISR")
    assert diff == 0.5 and table == [[0.5, 0.5, -0.5], [0.5, -0.5, -0.5]]
    # seed sums .5, -.5; session sums 1, 0, -1; M = 6 units
    v_seed = 2 / 1 * (0.25 + 0.25) / 36
    v_session = 3 / 2 * (1 + 0 + 1) / 36
    v_unit = 6 / 5 * (6 * 0.25) / 36
    half = 12.706205 * math.sqrt(v_seed + v_session - v_unit)  # t with 1 degree of freedom
    result = crossed_difference(grid, "ISR")
    assert result["diff"] == 0.5 and result["units"] == 6 and result["seeds"] == 2
    assert result["ci95"] == pytest.approx([0.5 - half, 0.5 + half], abs=1e-4)
    # two-way ANOVA: MS seed 1/6, MS session 1/2, MS residual 1/6
    assert result["components"] == {"seed": 0.0, "session": pytest.approx(1 / 6, abs=1e-6),
                                    "residual": pytest.approx(1 / 6, abs=1e-6)}
    assert components(table) == pytest.approx({"seed": 0.0, "session": 1 / 6, "residual": 1 / 6})


def test_one_seed_is_the_interval_over_sessions():
    pairs = grid_of([[1, 1, 0, -1, 0]])
    assert crossed_difference(pairs, "CSR") == {**paired_difference(pairs[0], "CSR"), "seeds": 1, "components": None}


def test_seeds_that_agree_add_no_seed_variance():
    # the same table under four seeds: the seed component is 0 and the interval narrows with t
    grid = grid_of([[1, 0, 0, -1, 1, 1]] * 4)
    result = crossed_difference(grid, "ISR")
    assert result["components"]["seed"] == 0.0 and result["components"]["residual"] == 0.0
    assert result["diff"] == round(2 / 6, 4)


def test_projection_and_seeds_needed():
    parts = {"seed": 0.04, "session": 0.0, "residual": 0.0}
    # only seed variance: the half-width is t(S-1) * 0.2 / sqrt(S) whatever the sessions
    assert half_width(parts, 8, 100) == pytest.approx(critical(8) * 0.2 / math.sqrt(8))
    assert half_width(parts, 8, 100) == half_width(parts, 8, 10_000)
    needed = seeds_needed(parts, 100, 0.1)
    assert half_width(parts, needed, 100) <= 0.1 < half_width(parts, needed - 1, 100)
    assert seeds_needed(parts, 100, 1e-6, most=50) is None
    assert critical(8) == pytest.approx(2.364624, abs=1e-6)
