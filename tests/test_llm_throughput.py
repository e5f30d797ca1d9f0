"""benchmarks/llm_throughput.py: the steady-state window, and a short run end to end (no timing bands:
the benchmark checks its own figures)."""

from __future__ import annotations

import pytest

from benchmarks.llm_throughput import _rates, run_benchmark


def waves(count: int, concurrency: int, period: float, first: float) -> list[float]:
    """Completion times of `count` requests answered in waves of `concurrency`, `period` apart."""
    return [first + (i // concurrency) * period + (i % concurrency) * 1e-4 for i in range(count)]


def test_steady_rate_spans_whole_waves():
    done = waves(1280, 64, 0.1, first=0.3)  # a slow first wave, then 640 requests/s
    rates = _rates(0.0, done, cpu=1.0, concurrency=64)
    assert rates["steady"] == pytest.approx(640, rel=1e-9)
    assert rates["whole"] == pytest.approx(1280 / done[-1])
    assert rates["cpu_ms"] == pytest.approx(1000 / 1280)


def test_too_few_requests_for_a_window():
    with pytest.raises(ValueError, match="too few requests"):
        _rates(0.0, waves(64, 64, 0.1, first=0.1), cpu=0.0, concurrency=64)


def test_short_run_reports_every_figure_and_removes_its_cache(tmp_path):
    report = run_benchmark(requests=160, concurrency=16, latency_s=0.02, repeats=1, cache_root=str(tmp_path))
    for kind in ("", "sdk_", "bare_aiohttp_"):
        for rate in ("steady", "whole"):
            assert report[f"{kind}{rate}_ratio"] > 0 and len(report["runs"][f"{kind}{rate}_ratio"]) == 1
    assert report["ideal_requests_per_s"] == 800.0
    assert report["requests"] == 160 and report["retries"] == 0
    assert not list(tmp_path.iterdir())  # the benchmark's cache is removed afterwards
