"""`sysbench.py score` on a hand-made file in SysBench's evaluation-output format, numbers by hand.

The fixture: five dialogues of five turns (1, 3, 5 related; 2, 4 parallel; turn 1 aligned, the
rest misaligned). Verdicts per turn (- : a turn without criteria):
    1: 是是 | 是 | 否是 | 是 | 是          streak 2
    2: 是 | 是,不适用 | - | 是 | 否        streak 1 (不适用 fails the turn, as SysBench counts it)
    3: 否否 | 是 | 是 | 是 | 是            streak 0
    4: 是是是 on every turn                streak 5 (its verdicts and criteria are Python literals)
    5: 是 | 不适用 | 是 | 否 | 是           streak 1
Fields no figure uses hold a null, a number and an empty string.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.eval.sysbench.data import load_judged
from rpo.eval.sysbench.metrics import sysbench_metrics

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
EVAL_OUTPUT = FIXTURES / "sysbench_eval_output.json"
SYSBENCH = [sys.executable, str(ROOT / "src" / "eval" / "sysbench.py")]


def r4(x: float) -> float:
    return round(x, 4)


def test_score_by_hand():
    m = sysbench_metrics(load_judged(EVAL_OUTPUT), rounds=200)
    assert m["complete"] is True
    # CSR pools verdicts: 6/7, 3/5, 4/6, 15/15, 3/5 are 是
    assert m["CSR"] == r4(31 / 38)
    # ISR: a turn is followed only when every verdict is 是 (4 + 3 + 4 + 5 + 3 turns)
    assert m["ISR"] == r4(19 / 25)
    assert m["SSR"] == r4((2 + 1 + 0 + 5 + 1) / 25)
    assert m["by_turn"] == [r4(4 / 5), r4(3 / 5), r4(4 / 5), r4(4 / 5), r4(4 / 5)]
    assert m["streak"] == [r4(4 / 5), r4(2 / 5), r4(1 / 5), r4(1 / 5), r4(1 / 5)]
    assert m["by_type"] == {"内容约束": r4(19 / 24), "格式约束": r4(7 / 9), "风格约束": 1.0}
    # the aligned / misaligned table counts a turn as usable when no verdict is 否 (不适用 passes)
    assert m["by_alignment"] == {"align": r4(4 / 5), "misalign": r4(17 / 20), "total": r4(21 / 25)}
    related, parallel = m["by_dialogue"]["related"], m["by_dialogue"]["parallel"]
    assert related == {"dialogues": 3, "SSR": r4(3 / 15), "streak": [r4(2 / 3), r4(1 / 3), 0.0, 0.0, 0.0],
                       "by_alignment": {"align": r4(2 / 3), "misalign": r4(10 / 12), "total": r4(12 / 15)}}
    assert parallel == {"dialogues": 2, "SSR": r4(6 / 10), "streak": [1.0, 0.5, 0.5, 0.5, 0.5],
                        "by_alignment": {"align": 1.0, "misalign": r4(7 / 8), "total": r4(9 / 10)}}
    assert (m["dialogues"], m["turns"], m["unjudged"], m["criteria"]) == (5, 25, 0, 38)
    # the seeded bootstrap over the five dialogues, taken in system_id order whatever order they come in
    expected = {"CSR": [r4(8 / 13), r4(18 / 19)], "ISR": [r4(16 / 25), r4(22 / 25)], "SSR": [r4(3 / 25), r4(18 / 25)]}
    assert m["ci95"] == expected
    assert sysbench_metrics(list(reversed(load_judged(EVAL_OUTPUT))), rounds=200)["ci95"] == expected


def test_score_json_prints_one_object_and_nothing_else():
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={EVAL_OUTPUT}", "--json"],
                          capture_output=True, text=True, check=True)
    metrics = json.loads(done.stdout)
    assert set(metrics) >= {"CSR", "ISR", "SSR", "ci95", "by_type", "by_turn", "by_alignment", "dialogues",
                            "turns", "unjudged", "complete", "judge"}
    assert metrics["CSR"] == 0.8158 and metrics["SSR"] == 0.36


def test_score_table():
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={EVAL_OUTPUT}"], capture_output=True, text=True,
                          check=True)
    assert "CSR     81.58 [" in done.stdout and "unjudged turns 0" in done.stdout


def _write(tmp_path: Path, mutate) -> Path:
    data = json.loads(EVAL_OUTPUT.read_text(encoding="utf-8"))
    mutate(data)
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_dialogue_without_verdicts_leaves_no_figure(tmp_path):
    path = _write(tmp_path, lambda d: d[4].update(eval_results=None))
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={path}", "--json"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    metrics = json.loads(done.stdout)
    assert metrics["complete"] is False and (metrics["CSR"], metrics["ISR"], metrics["SSR"]) == (None, None, None)
    assert metrics["unjudged"] == 5 and "by_type" not in metrics
    table = subprocess.run([*SYSBENCH, "score", f"--eval_file={path}"], capture_output=True, text=True, check=False)
    assert table.returncode == 1 and "CSR       n/a" in table.stdout and "INCOMPLETE: 5 of 25 turns unjudged" in table.stdout


def _first_verdicts(d: list) -> dict:
    return next(iter(d[0]["eval_results"].values()))["评判结果"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[1].pop("eval_results"), "record 1 (system_id 2): field eval_results: missing"),
        (lambda d: d[0]["messages"].pop(), "record 0 (system_id 1): field messages"),
        (lambda d: d[2].update(rounds_related="maybe"), "record 2 (system_id 3): field rounds_related"),
        (lambda d: d[0]["eval_results"].pop(next(iter(d[0]["eval_results"]))),
         "record 0 (system_id 1): field eval_results: no result for the user message of turn 1"),
        (lambda d: _first_verdicts(d).update({"9": "是"}),
         "record 0 (system_id 1): turn 1: criterion 9: a verdict for a criterion the turn does not have"),
        (lambda d: _first_verdicts(d).pop("2"), "record 0 (system_id 1): turn 1: criterion 2: no verdict"),
        (lambda d: _first_verdicts(d).update({"1": "yes"}),
         'record 0 (system_id 1): turn 1: criterion 1: verdict "yes" is not one of SysBench\'s (是, 否, 不适用, 部分是'),
        (lambda d: _first_verdicts(d).update({"2": True}), "turn 1: criterion 2: verdict true is not one of"),
        (lambda d: _first_verdicts(d).update({"2": " 是"}), 'turn 1: criterion 2: verdict " 是" is not one of'),
        (lambda d: d[3].update(system_id=1), "record 3 (system_id 1): field system_id: duplicate"),
    ],
)
def test_bad_records_are_refused_with_file_record_and_field(tmp_path, mutate, message):
    bad = _write(tmp_path, mutate)
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={bad}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: ") and message in line


def test_deeply_nested_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "deep.json"
    bad.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={bad}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {bad}: invalid JSON (nested too deeply)"]


def test_duplicated_turn_in_judgments_is_refused(tmp_path):
    turns = [turn for dialogue in load_judged(EVAL_OUTPUT) for turn in dialogue]
    path = tmp_path / "judgments.jsonl"
    lines = [t.model_dump_json() for t in turns[:3]] + [turns[1].model_dump_json()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run([*SYSBENCH, "score", f"--eval_file={path}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {path}: line 4: system_id 1 turn 2: recorded twice (first on line 2)"


def test_score_of_a_run_still_in_progress_says_so(tmp_path):
    from rpo.utils.io import output_lock

    run = tmp_path / "run"
    run.mkdir()
    turns = [turn for dialogue in load_judged(EVAL_OUTPUT) for turn in dialogue]
    (run / "judgments.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in turns), encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"turns": 25, "judge": {"model": "j", "prompt": "own"}}),
                                  encoding="utf-8")
    finished = subprocess.run([*SYSBENCH, "score", f"--eval_file={run}", "--json"], capture_output=True, text=True,
                              check=True)
    assert json.loads(finished.stdout)["CSR"] == 0.8158
    with output_lock(run):
        done = subprocess.run([*SYSBENCH, "score", f"--eval_file={run}"], capture_output=True, text=True,
                              check=False)
    assert done.returncode == 1 and f"a run is still writing {run}: these are partial results" in done.stdout
    assert "CSR       n/a" in done.stdout


def test_an_unjudged_record_gives_way_to_a_later_judgment(tmp_path):
    turns = [turn for dialogue in load_judged(EVAL_OUTPUT) for turn in dialogue][:5]
    path = tmp_path / "judgments.jsonl"
    unjudged = turns[1].model_copy(update={"verdicts": None})
    path.write_text("".join(t.model_dump_json() + "\n" for t in [turns[0], unjudged, *turns[1:]]), encoding="utf-8")
    [dialogue] = load_judged(path)
    assert [t.verdicts for t in dialogue] == [t.verdicts for t in turns]


def test_no_criterion_anywhere_is_no_result():
    dialogues = load_judged(EVAL_OUTPUT)
    bare = [[t.model_copy(update={"verdicts": {}, "criteria": {}}) for t in d] for d in dialogues]
    metrics = sysbench_metrics(bare, rounds=10)
    assert metrics["complete"] is False and metrics["CSR"] is None
    assert metrics["incomplete"] == "no turn has a criterion: CSR would be computed from nothing"
