"""`compare.py`: the paper's Table 1 from several runs, notes on what does not compare, refusals.

Multi-IF metrics are written by hand in the shape SPEC §8 gives them (`paper.steps` for the
paper's English + Chinese figure), so the layout is tested apart from Multi-IF's scoring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.eval.sysbench.data import load_judged
from rpo.eval.sysbench.metrics import sysbench_metrics
from rpo.utils.io import write_json

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
COMPARE = [sys.executable, str(ROOT / "src" / "eval" / "compare.py")]


def _step(mean: float) -> dict:
    return {"prompt_strict": mean, "inst_strict": mean, "prompt_loose": mean, "inst_loose": mean, "mean": mean}


def _multi_if(means: list[float], languages: list[str] | None = ("English", "Chinese")) -> dict:
    metrics = {"steps": [_step(0.1)] * 3, "ci95": [{"mean": [0.0, 0.2]}] * 3, "n": 10, "by_language": {}}
    if languages is not None:
        metrics["paper"] = {"languages": list(languages), "steps": [_step(m) for m in means],
                            "ci95": [{"mean": [m - 0.05, m + 0.05]} for m in means]}
    return metrics


def _sysbench(judge: dict | None = None) -> dict:
    metrics = sysbench_metrics(load_judged(FIXTURES / "sysbench_eval_output.json"), rounds=100)
    return {**metrics, "judge": judge or {"model": "gpt-4o-2024-05-13", "prompt": "sysbench"}}


def test_table_one_layout_figure_and_json(tmp_path):
    write_json(tmp_path / "base" / "sysbench" / "metrics.json", _sysbench())
    write_json(tmp_path / "base" / "multi_if" / "metrics.json", _multi_if([0.8, 0.6, 0.4]))
    write_json(tmp_path / "rpo" / "metrics.json", _sysbench())  # a run directory itself, SysBench only
    figure = tmp_path / "fig" / "compare.png"
    done = subprocess.run([*COMPARE, str(tmp_path / "base"), str(tmp_path / "rpo"), f"--figure={figure}"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["model", "SysBench", "CSR", "SysBench", "ISR", "SysBench", "SSR", "SysBench", "Avg.",
                                "Multi-IF", "T1", "Multi-IF", "T2", "Multi-IF", "T3", "Multi-IF", "Avg."]
    base = next(line for line in lines if line.startswith("base"))
    rpo = next(line for line in lines if line.startswith("rpo"))
    avg = round(100 * (0.8158 + 0.76 + 0.36) / 3, 2)
    assert "81.58 [" in base and f"  {avg:.2f}  " in base and "80.00 [75.00, 85.00]" in base
    assert base.rstrip().endswith("60.00")
    assert "81.58 [" in rpo and rpo.rstrip().endswith("-")
    assert not any(line.startswith("note:") for line in lines)  # same judge, the paper's subset
    assert "nan" not in done.stdout
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    as_json = subprocess.run([*COMPARE, str(tmp_path / "base"), f"--figure={figure}", "--json"],
                             capture_output=True, text=True, check=True)
    result = json.loads(as_json.stdout)
    entry = result["runs"][0]
    assert entry["sysbench"]["ISR"]["value"] == 0.76 and entry["sysbench"]["Avg"]["value"] == pytest.approx(
        (0.8158 + 0.76 + 0.36) / 3)
    assert [s["value"] for s in entry["multi_if"]["steps"]] == [0.8, 0.6, 0.4]
    assert entry["multi_if"]["languages"] == ["Chinese", "English"] and result["notes"] == []


def test_other_judges_and_subsets_are_flagged(tmp_path):
    write_json(tmp_path / "a" / "sysbench" / "metrics.json", _sysbench())
    write_json(tmp_path / "a" / "multi_if" / "metrics.json", _multi_if([0.8, 0.6, 0.4]))
    write_json(tmp_path / "b" / "sysbench" / "metrics.json", _sysbench({"model": "gpt-4o", "prompt": "own"}))
    write_json(tmp_path / "b" / "multi_if" / "metrics.json", _multi_if([0.5, 0.5, 0.5], ["English"]))
    write_json(tmp_path / "c" / "metrics.json", _multi_if([0.1, 0.1, 0.1], None))
    done = subprocess.run([*COMPARE, str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"),
                           f"--figure={tmp_path / 'f.png'}"], capture_output=True, text=True, check=True)
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert notes == [
        ("note: b: SysBench judged with this project's own prompt, not SysBench's: not comparable with SysBench's "
        "published figures"),
        ("note: SysBench judges differ between rows (a: gpt-4o-2024-05-13 (sysbench); b: gpt-4o (own)): its columns "
        "do not compare across them"),
        "note: c: Multi-IF over every language of its file, not the paper's subset",
        "note: Multi-IF subsets differ between rows (a: Chinese,English; b: English; c: all)",
    ]


def test_a_folder_without_metrics_is_refused(tmp_path):
    done = subprocess.run([*COMPARE, str(tmp_path), f"--figure={tmp_path / 'f.png'}"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and f"{tmp_path}: no metrics.json" in done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda m: {**m, "complete": False, "incomplete": "3 of 25 turns unjudged", "CSR": None},
         "an incomplete run (3 of 25 turns unjudged): finish it"),
        (lambda m: {k: v for k, v in m.items() if k != "ISR"}, "field ISR: missing"),
        (lambda m: {**m, "ci95": {"CSR": [0, 1], "ISR": [0, 1]}}, "field ci95.SSR: missing"),
        (lambda m: {**m, "CSR": "0.8"}, 'field CSR: expected a fraction in [0, 1], got "0.8"'),
        (lambda m: {**m, "SSR": float("nan")}, "field SSR: expected a fraction in [0, 1], got NaN"),
        (lambda m: {**m, "CSR": 81.6}, "field CSR: expected a fraction in [0, 1], got 81.6"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"{", "invalid JSON"),
    ],
)
def test_bad_metrics_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content(_sysbench())), encoding="utf-8")
    done = subprocess.run([*COMPARE, str(tmp_path / "run"), f"--figure={tmp_path / 'f.png'}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and message in line


def test_a_multi_if_step_without_its_mean_is_refused(tmp_path):
    metrics = _multi_if([0.8, 0.6, 0.4])
    del metrics["paper"]["steps"][1]["mean"]
    write_json(tmp_path / "run" / "metrics.json", metrics)
    done = subprocess.run([*COMPARE, str(tmp_path / "run"), f"--figure={tmp_path / 'f.png'}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "field paper.steps.1.mean: missing" in done.stderr
