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


def test_bootstrap_interval_by_hand():
    # sessions all alike: every resample is the same, so the interval is the value itself
    assert bootstrap_ci95([[[True, False], [True]]] * 7) == {"CSR": [0.6667, 0.6667], "ISR": [0.5, 0.5],
                                                             "SSR": [0.0, 0.0]}
    # one followed and one failed one-turn session: a resample of two is 0, 1/2 or 1 with probability
    # 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles of 1000 are 0 and 1
    ci = bootstrap_ci95([[[True]], [[False]]])
    assert ci == {"CSR": [0.0, 1.0], "ISR": [0.0, 1.0], "SSR": [0.0, 1.0]}
