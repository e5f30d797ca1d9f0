"""IFEval / Multi-IF scoring of hand-made responses whose strict and loose verdicts are known.

IFEval fixture (one step): 1 follows; 2 breaks lowercase only in a first line (loose passes); 3 ends
with the phrase wrapped in `**` (loose passes); 4 is too short but has no comma; 5 has two sentences
full of abbreviations (NLTK's Punkt model must be installed to count them right).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rpo.eval.multi_if import multi_if_metrics
from rpo.eval.multi_if_data import load_responses, load_rows

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
MULTI_IF = [sys.executable, str(ROOT / "src" / "eval" / "multi_if.py")]

MULTI_IF_RESPONSES = {
    ("a1", 1): "The sea is wide. The waves are loud.",
    ("a1", 2): "Here you go:\nthe sea is wide. the waves are loud.",
    ("a1", 3): "the sea is wide.",
    ("z1", 1): "<<春天>>\n春风吹绿了山岗。",
    ("z1", 2): "<<春雨>>\n细雨润物，谢谢",
    ("z1", 3): "<<夏>>\n夏日炎炎。",
}


def _write_responses(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for (key, step), response in MULTI_IF_RESPONSES.items():
            fh.write(json.dumps({"key": key, "step": step, "response": response}, ensure_ascii=False) + "\n")
    return path


def test_ifeval_format_strict_and_loose():
    done = subprocess.run([*MULTI_IF, "score", f"--data={FIXTURES / 'ifeval_input.jsonl'}",
                           f"--responses={FIXTURES / 'ifeval_responses.jsonl'}", "--json"],
                          capture_output=True, text=True, check=True)
    metrics = json.loads(done.stdout)
    [step] = metrics["steps"]
    assert step == pytest.approx({"prompt_strict": 2 / 5, "inst_strict": 3 / 6, "prompt_loose": 4 / 5,
                                  "inst_loose": 5 / 6, "mean": (2 / 5 + 3 / 6 + 4 / 5 + 5 / 6) / 4})
    assert metrics["n"] == 5 and metrics["unsupported"] == {}


@pytest.mark.parametrize("form", ["csv", "jsonl", "parquet"])
def test_multi_if_steps_languages_and_unsupported_ids(tmp_path, form):
    data = FIXTURES / "multi_if.csv"
    if form != "csv":
        frame = pd.read_csv(data, dtype=str)
        data = tmp_path / f"multi_if.{form}"
        frame.to_parquet(data) if form == "parquet" else frame.to_json(data, orient="records", lines=True,
                                                                       force_ascii=False)
    rows = load_rows(data)
    metrics = multi_if_metrics(rows, load_responses(_write_responses(tmp_path / "r.jsonl"), rows), rounds=50)
    step1, step2, step3 = metrics["steps"]
    assert step1 == pytest.approx({"prompt_strict": 1, "inst_strict": 1, "prompt_loose": 1, "inst_loose": 1,
                                   "mean": 1})
    assert step2 == pytest.approx({"prompt_strict": 1 / 2, "inst_strict": 3 / 4, "prompt_loose": 1,
                                   "inst_loose": 1, "mean": (1 / 2 + 3 / 4 + 1 + 1) / 4})
    assert step3 == pytest.approx({"prompt_strict": 0, "inst_strict": 3 / 5, "prompt_loose": 0,
                                   "inst_loose": 3 / 5, "mean": 0.3})
    assert metrics["by_language"]["English"]["steps"][2]["inst_strict"] == pytest.approx(2 / 3)
    assert metrics["by_language"]["Chinese"]["steps"][2]["inst_strict"] == pytest.approx(1 / 2)
    assert metrics["unsupported"] == {"length_constraints:number_characters": 1}
    assert metrics["n"] == 2 and len(metrics["ci95"]) == 3


def test_score_cli_reports_unsupported_ids(tmp_path):
    done = subprocess.run([*MULTI_IF, "score", f"--data={FIXTURES / 'multi_if.csv'}",
                           f"--responses={_write_responses(tmp_path / 'r.jsonl')}"],
                          capture_output=True, text=True, check=True)
    assert "length_constraints:number_characters ×1" in done.stdout
    assert "counted as not followed" in done.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(turn_1_prompt="not json"), "row 1 (key a1): field turn_1_prompt: not a JSON message"),
        (lambda r: r.update(turn_2_kwargs="[]"), "row 1 (key a1): step 2: 2 instruction ids but 0 kwargs"),
        (lambda r: r.update(key="z1"), "row 2 (key z1): field key: duplicate"),
    ],
)
def test_bad_rows_are_refused(tmp_path, edit, message):
    frame = pd.read_csv(FIXTURES / "multi_if.csv", dtype=str)
    records = frame.to_dict(orient="records")
    edit(records[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    done = subprocess.run([*MULTI_IF, "score", f"--data={bad}", f"--responses={_write_responses(tmp_path / 'r.jsonl')}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"error: {bad}: {message}"


def test_missing_response_is_refused(tmp_path):
    responses = tmp_path / "r.jsonl"
    _write_responses(responses)
    lines = responses.read_text(encoding="utf-8").splitlines()[:-1]
    responses.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run([*MULTI_IF, "score", f"--data={FIXTURES / 'multi_if.csv'}", f"--responses={responses}"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no response for key z1 step 3" in done.stderr
