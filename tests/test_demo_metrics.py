"""SysBench metrics on hand-made judgments."""

import pytest
from rpo.eval.metrics import bootstrap_ci95, csr, isr, ssr

SESSIONS = [
    [[True, True], [True, False], [True, True]],  # streak 1 of 3
    [[True, True, True], [True, True, True]],  # streak 2 of 2
    [[False], [True]],  # streak 0 of 2
]


def test_metrics_by_hand():
    assert csr(SESSIONS) == pytest.approx(12 / 14)
    assert isr(SESSIONS) == pytest.approx(5 / 7)
    assert ssr(SESSIONS) == pytest.approx((1 / 3 + 1 + 0) / 3)


def test_bootstrap_interval_brackets_the_estimate():
    ci = bootstrap_ci95(SESSIONS * 10, rounds=300)
    assert ci["ISR"][0] <= isr(SESSIONS) <= ci["ISR"][1]
