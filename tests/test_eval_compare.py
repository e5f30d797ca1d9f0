"""`compare.py`: one table of several runs and a figure (written to a temp dir, never to img/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rpo.eval.multi_if.data import load_responses, load_rows
from rpo.eval.multi_if.summary import multi_if_metrics
from rpo.eval.sysbench_data import load_judged
from rpo.eval.sysbench_metrics import sysbench_metrics
from rpo.utils.io import write_json

from tests.test_eval_ifeval_score import _write_responses

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
COMPARE = [sys.executable, str(ROOT / "src" / "eval" / "compare.py")]


def test_table_and_figure(tmp_path):
    sysbench = sysbench_metrics(load_judged(FIXTURES / "sysbench_eval_output.json"), rounds=100)
    rows = load_rows(FIXTURES / "multi_if.csv")
    multi_if = multi_if_metrics(rows, load_responses(_write_responses(tmp_path / "r.jsonl"), rows), rounds=100)
    write_json(tmp_path / "base" / "sysbench" / "metrics.json", sysbench)
    write_json(tmp_path / "base" / "multi_if" / "metrics.json", multi_if)
    write_json(tmp_path / "rpo" / "metrics.json", sysbench)  # a run directory itself, SysBench only
    figure = tmp_path / "fig" / "compare.png"
    done = subprocess.run([*COMPARE, str(tmp_path / "base"), str(tmp_path / "rpo"), f"--figure={figure}"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "SysBench", "CSR", "SysBench"]
    base = next(line for line in lines if line.startswith("base"))
    rpo = next(line for line in lines if line.startswith("rpo"))
    assert "84.8 [" in base and "100.0 [" in base and "30.0 [" in base
    assert "84.8 [" in rpo and rpo.rstrip().endswith("-")
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    as_json = subprocess.run([*COMPARE, str(tmp_path / "base"), f"--figure={figure}", "--json"],
                             capture_output=True, text=True, check=True)
    result = json.loads(as_json.stdout)
    assert result["runs"][0]["sysbench"]["ISR"]["value"] == 17 / 20
    assert [s["value"] for s in result["runs"][0]["multi_if"]] == [step["mean"] for step in multi_if["steps"]]


def test_a_folder_without_metrics_is_refused(tmp_path):
    done = subprocess.run([*COMPARE, str(tmp_path), f"--figure={tmp_path / 'f.png'}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and f"{tmp_path}: no metrics.json" in done.stderr
