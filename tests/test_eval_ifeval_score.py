"""IFEval / Multi-IF scoring of hand-made responses whose strict and loose verdicts are known.

IFEval fixture (one step): 1 follows; 2 breaks lowercase only in a first line (loose passes); 3 ends
with the phrase wrapped in `**` (loose passes); 4 is too short but has no comma; 5 has two sentences
full of abbreviations (NLTK's Punkt model must be installed to count them right).

Multi-IF fixture (the release's columns; `turns` and `responses` empty): an English row of three
steps, a Chinese one whose words and sentences count only by Multi-IF's character rules (9
characters; 5 sentences), and a Hindi one of two steps (`।` sentences, `“…”` quotation; its third
prompt is the string `None`, skipped as Multi-IF skips it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rpo.eval.multi_if.data import load_responses, load_rows
from rpo.eval.multi_if.run import score
from rpo.eval.multi_if.summary import multi_if_metrics

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
MULTI_IF = [sys.executable, str(ROOT / "src" / "eval" / "multi_if.py")]

MULTI_IF_RESPONSES = {
    ("a1", 1): "The sea is wide. The waves are loud.",
    ("a1", 2): "Here you go:\nthe sea is wide. the waves are loud.",
    ("a1", 3): "the sea is wide.",
    ("z1", 1): "<<春天>>\n春风吹绿了山岗。",
    ("z1", 2): "<<春雨>>\n细雨润物，谢谢",
    ("z1", 3): "<<夏>>\n夏日炎炎。蝉鸣不止！\n荷花盛开。谢谢",
    ("h1", 1): "आज समुद्र बहुत शांत है। मछुआरे जाल ठीक कर रहे हैं।",
    ("h1", 2): "“आज समुद्र शांत है।”",
}
ALL = {"prompt_strict": 1, "inst_strict": 1, "prompt_loose": 1, "inst_loose": 1, "mean": 1}


def _write_responses(path: Path, responses: dict[tuple[str, int], str] = MULTI_IF_RESPONSES) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for (key, step), response in responses.items():
            fh.write(json.dumps({"key": key, "step": step, "response": response}, ensure_ascii=False) + "\n")
    return path


def test_ifeval_format_strict_and_loose(capsys):
    score(data=str(FIXTURES / "ifeval_input.jsonl"), responses=str(FIXTURES / "ifeval_responses.jsonl"), json=True,
          bootstrap_rounds=10)
    metrics = json.loads(capsys.readouterr().out)
    [step] = metrics["steps"]
    assert step == pytest.approx({"prompt_strict": 2 / 5, "inst_strict": 3 / 6, "prompt_loose": 4 / 5,
                                  "inst_loose": 5 / 6, "mean": (2 / 5 + 3 / 6 + 4 / 5 + 5 / 6) / 4})
    assert metrics["n"] == 5 and metrics["by_language"]["en"]["n"] == 5 and metrics["paper"] is None


@pytest.mark.parametrize("form", ["csv", "jsonl", "parquet"])
def test_multi_if_steps_languages_and_paper_figure(tmp_path, form):
    data = FIXTURES / "multi_if.csv"
    if form != "csv":
        frame = pd.read_csv(data, dtype=str, keep_default_na=False)
        data = tmp_path / f"multi_if.{form}"
        frame.to_parquet(data) if form == "parquet" else frame.to_json(data, orient="records", lines=True,
                                                                       force_ascii=False)
    rows = load_rows(data)
    assert [[s.number for s in row.steps] for row in rows] == [[1, 2, 3], [1, 2, 3], [1, 2]]
    metrics = multi_if_metrics(rows, load_responses(_write_responses(tmp_path / "r.jsonl"), rows), rounds=50)
    step1, step2, step3 = metrics["steps"]
    assert step1 == pytest.approx(ALL)
    assert step2 == pytest.approx({"prompt_strict": 2 / 3, "inst_strict": 4 / 5, "prompt_loose": 1,
                                   "inst_loose": 1, "mean": (2 / 3 + 4 / 5 + 1 + 1) / 4})
    # under four words fails ("the sea is wide." has four); the Chinese answer has five sentences, not
    # fewer than two (English Punkt rules would count one and pass it)
    assert step3 == pytest.approx({"prompt_strict": 0, "inst_strict": 3 / 5, "prompt_loose": 0, "inst_loose": 3 / 5,
                                   "mean": 0.3})
    assert {lang: v["n"] for lang, v in metrics["by_language"].items()} == {"en": 1, "hi": 1, "zh": 1}
    assert metrics["by_language"]["en"]["steps"][1]["inst_strict"] == pytest.approx(1 / 2)
    assert len(metrics["by_language"]["hi"]["steps"]) == 2
    paper = metrics["paper"]
    assert paper["languages"] == ["en", "zh"]
    assert paper["steps"][1] == pytest.approx({"prompt_strict": 1 / 2, "inst_strict": 3 / 4, "prompt_loose": 1,
                                               "inst_loose": 1, "mean": (1 / 2 + 3 / 4 + 1 + 1) / 4})
    assert paper["steps"][2]["inst_strict"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["n"] == 3 and len(metrics["ci95"]) == 3 and metrics["think_stripped"] == 0


def test_score_cli_by_language_and_subset(tmp_path, capsys):
    responses = _write_responses(tmp_path / "r.jsonl")
    done = subprocess.run([*MULTI_IF, "score", f"--data={FIXTURES / 'multi_if.csv'}", f"--responses={responses}",
                           "--bootstrap_rounds=10"], capture_output=True, text=True, check=True)
    assert "paper's figure (English + Chinese, weighted by rows), steps 1..3: 100.0 / 81.2 / 29.2" in done.stdout
    assert [line.split()[:2] for line in done.stdout.splitlines() if line.startswith(("en ", "zh ", "hi "))] == \
        [["en", "1"], ["hi", "1"], ["zh", "1"]]
    score(data=str(FIXTURES / "multi_if.csv"), responses=str(responses), languages="hi", json=True, bootstrap_rounds=10)
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 1 and list(metrics["by_language"]) == ["hi"] and metrics["paper"] is None
    assert len(metrics["steps"]) == 2


def test_think_blocks_are_removed_unless_kept(tmp_path):
    rows = load_rows(FIXTURES / "multi_if.csv", ["en"])
    answers = dict(MULTI_IF_RESPONSES)
    answers[("a1", 1)] = "<think>First, a comma, then a plan.</think>" + answers[("a1", 1)]
    stripped = multi_if_metrics(rows, answers, rounds=10)
    kept = multi_if_metrics(rows, answers, keep_think=True, rounds=10)
    assert stripped["think_stripped"] == 1 and stripped["steps"][0]["mean"] == 1
    assert kept["think_stripped"] is None and kept["steps"][0]["mean"] == 0


def test_score_warns_when_most_answers_are_alike(tmp_path, capsys):
    same = {key: "I cannot help with that." for key in MULTI_IF_RESPONSES}
    score(data=str(FIXTURES / "multi_if.csv"), responses=str(_write_responses(tmp_path / "r.jsonl", same)),
          json=True, bootstrap_rounds=10)
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 3
    assert captured.err == ("warning: 8 of 8 answers are the same text ('I cannot help with that.'): "
                            "the model ignores its input\n")
