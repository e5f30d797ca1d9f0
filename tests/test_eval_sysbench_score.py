"""`sysbench.py score` on a hand-made file in SysBench's evaluation-output format, numbers by hand.

The fixture: five dialogues of five turns. Dialogue 2 has a `不适用` verdict (not a followed
criterion, but not a failed turn, as SysBench's analysis counts it) and a turn with no criteria (a
followed turn); dialogue 4 writes `评判结果` and `criteria` as Python literals, as SysBench's files
sometimes do; dialogue 5 has `eval_results: null` (its judging failed), so its turns are unjudged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.eval.sysbench_data import load_judged
from rpo.eval.sysbench_metrics import sysbench_metrics

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
EVAL_OUTPUT = FIXTURES / "sysbench_eval_output.json"
SYSBENCH = [sys.executable, str(ROOT / "src" / "eval" / "sysbench.py")]


def test_score_by_hand():
    m = sysbench_metrics(load_judged(EVAL_OUTPUT), rounds=200)
    assert m["CSR"] == pytest.approx(28 / 33)
    assert m["ISR"] == pytest.approx(17 / 20)
    assert m["SSR"] == pytest.approx((2 / 5 + 4 / 5 + 0 + 1) / 4)
    assert m["by_turn"] == pytest.approx([3 / 4, 1, 3 / 4, 1, 3 / 4])
    assert m["by_type"] == pytest.approx({"内容约束": 16 / 19, "格式约束": 7 / 9, "风格约束": 1.0})
    assert m["by_alignment"] == pytest.approx({"align": 3 / 4, "misalign": 14 / 16})
    assert m["by_dialogue"]["related"] == pytest.approx({"CSR": 10 / 13, "ISR": 8 / 10, "SSR": 0.2, "dialogues": 3})
    assert m["by_dialogue"]["parallel"] == pytest.approx({"CSR": 18 / 20, "ISR": 9 / 10, "SSR": 0.9, "dialogues": 2})
    assert (m["dialogues"], m["turns"], m["unjudged"], m["criteria"]) == (5, 25, 5, 33)
    for name in ("CSR", "ISR", "SSR"):
        low, high = m["ci95"][name]
        assert low <= m[name] <= high


def test_score_json_prints_one_object_and_nothing_else():
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={EVAL_OUTPUT}", "--json"],
                          capture_output=True, text=True, check=True)
    metrics = json.loads(done.stdout)
    assert set(metrics) >= {"CSR", "ISR", "SSR", "ci95", "by_type", "by_turn", "by_alignment", "dialogues",
                            "turns", "unjudged"}
    assert metrics["CSR"] == pytest.approx(28 / 33)


def test_score_table():
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={EVAL_OUTPUT}"], capture_output=True, text=True,
                          check=True)
    assert "CSR     84.8 [" in done.stdout and "unjudged turns 5" in done.stdout


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[1].pop("eval_results"), "record 1 (system_id 2): field eval_results: missing"),
        (lambda d: d[0]["messages"].pop(), "record 0 (system_id 1): field messages"),
        (lambda d: d[2].update(rounds_related="maybe"), "record 2 (system_id 3): field rounds_related"),
        (lambda d: d[0]["eval_results"].pop(next(iter(d[0]["eval_results"]))),
         "record 0 (system_id 1): field eval_results: no result for the user message of turn 1"),
        (lambda d: next(iter(d[0]["eval_results"].values()))["评判结果"].update({"9": "是"}),
         "criterion 9 is not among the turn's criteria"),
        (lambda d: d[3].update(system_id=1), "record 3 (system_id 1): field system_id: duplicate"),
    ],
)
def test_bad_records_are_refused_with_file_record_and_field(tmp_path, mutate, message):
    data = json.loads(EVAL_OUTPUT.read_text(encoding="utf-8"))
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={bad}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: ") and message in line
