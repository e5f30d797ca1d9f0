"""`make demo QUICK=1`'s run, end to end: every stage really runs and the report has SPEC §7's shape."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    out = base / "run"
    # relative paths, as `make demo` passes them
    proc = subprocess.run(
        [sys.executable, "-m", "rpo.demo.run", "--quick", "--output_dir", "run", "--figure_path", "run/demo.png"],
        capture_output=True, text=True, timeout=600, cwd=base, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text()), proc.stdout


def test_report_has_the_spec_shape(quick_run):
    _, report, _ = quick_run
    assert set(report["methods"]) == {"base", "dpo", "rpo"}
    for metrics in report["methods"].values():
        for name in ("CSR", "ISR", "SSR"):
            assert 0.0 <= metrics[name] <= 1.0
            low, high = metrics["ci95"][name]
            assert 0.0 <= low <= metrics[name] <= high <= 1.0
    for kind in ("direct", "reverse"):
        assert set(report["sample_efficiency"][kind]) == {"valid", "dominated", "perfect"}
    assert report["seeds"] == [0] and report["minutes"] > 0


def test_every_stage_ran(quick_run):
    out, report, stdout = quick_run
    assert report["pairs"]["dpo"] > 0 and report["pairs"]["rpo"] > report["pairs"]["dpo"]
    assert set(report["timings_s"]) == {"world", "sft", "sampling", "pairs", "dpo", "rpo", "evaluation"}
    assert report["eval_turns"] > 0
    # reversal makes every emitted chosen response perfect for its prompt
    assert report["sample_efficiency"]["reverse"]["perfect"] >= report["sample_efficiency"]["direct"]["perfect"]
    detail = (out / "seed0" / "detail.jsonl").read_text().splitlines()
    assert detail and all(len(t["samples"]) == 5 for t in json.loads(detail[0])["turns"])
    rpo_state = json.loads((out / "seed0" / "data" / "dataset_info.json").read_text())["demo_rpo"]
    assert rpo_state["columns"]["margin"] == "margin"
    assert (out / "demo.png").stat().st_size > 10_000
    assert "rpo/margin_mean" in (out / "seed0" / "rpo.log").read_text()
    assert "ISR 95% CI" in stdout


def test_quick_mode_fits_its_budget(quick_run):
    _, report, _ = quick_run
    assert report["minutes"] < 3.0
