"""`sysbench.py agree`: re-judge recorded answers with another (scripted) judge, numbers by hand.

The new judge finds criterion 1 followed and every other criterion not followed. Against the
fixture's 38 recorded verdicts (31 是): criterion 1 agrees 19 of 24 times, criterion 2 twice of 9
(its 否 and its 不适用), criterion 3 never (5), so agreement is 21/38 and Cohen's kappa (31/38 vs
24/38 followed, chance agreement 842/1444) is -44/602.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.eval.sysbench.agree import cohen_kappa

from tests.eval_servers import criteria_ids, judged_turn, replay_judge, replay_model
from tests.scripted_server import ScriptedServer
from tests.test_eval_sysbench_run import DATA, EVAL_OUTPUT, _recorded

ROOT = Path(__file__).resolve().parent.parent
SYSBENCH = [sys.executable, str(ROOT / "src" / "eval" / "sysbench.py")]


def only_first_followed(request: dict) -> str:
    ids = criteria_ids(request["messages"][0]["content"])
    return json.dumps({"评判理由": "-", "评判结果": {i: "是" if i == "1" else "否" for i in ids}})


def test_agreement_kappa_and_metric_moves(tmp_path):
    with ScriptedServer(handler=only_first_followed) as judge:
        done = subprocess.run([*SYSBENCH, "agree", f"--eval_file={EVAL_OUTPUT}", "--judge_model=small",
                               f"--judge_base_url={judge.base_url}", f"--output_dir={tmp_path / 'agree'}", "--json"],
                              capture_output=True, text=True, check=True)
        prompts = [r["messages"][0]["content"] for r in judge.chat_requests]
        assert len(prompts) == 24  # every turn with criteria
        judge.reset()
        subprocess.run([*SYSBENCH, "agree", f"--eval_file={EVAL_OUTPUT}", "--judge_model=small",
                        f"--judge_base_url={judge.base_url}", f"--output_dir={tmp_path / 'agree'}", "--json"],
                       capture_output=True, text=True, check=True)
        assert judge.requests == []  # resumed from its own judgments
    report = json.loads(done.stdout)
    assert report["n"] == 38 and report["agreement"] == pytest.approx(21 / 38)
    assert report["kappa"] == pytest.approx(-44 / 602)
    assert report["by_type"]["内容约束"] == pytest.approx({"n": 24, "agreement": 19 / 24, "kappa": 0.0})
    assert report["by_type"]["格式约束"]["agreement"] == pytest.approx(2 / 9)
    assert report["recorded"] == pytest.approx({"CSR": 31 / 38, "ISR": 19 / 25, "SSR": 9 / 25})
    assert report["rejudged"] == pytest.approx({"CSR": 24 / 38, "ISR": 16 / 25, "SSR": 0.24})
    assert report["delta"]["ISR"] == pytest.approx(16 / 25 - 19 / 25)
    assert report["unjudged"] == {"recorded": 0, "rejudged": 0}
    # the new judge saw the model's own recorded history (infer_results)
    turn2 = next(p for p in prompts if judged_turn(p) == ("关于茶叶的第2个问题？", "对话1的回答2。"))
    assert "对话1的回答1。" in turn2


def test_agree_on_a_run_directory(tmp_path):
    answers, verdicts = _recorded()
    out = tmp_path / "run"
    with ScriptedServer(handler=replay_model(answers)) as model, ScriptedServer(handler=replay_judge(verdicts)) as judge:
        subprocess.run([*SYSBENCH, "run", f"--data={DATA}", f"--output_dir={out}", "--model=m",
                        f"--base_url={model.base_url}", "--judge_model=j", f"--judge_base_url={judge.base_url}"],
                       capture_output=True, text=True, check=True)
        done = subprocess.run([*SYSBENCH, "agree", f"--eval_file={out}", "--judge_model=j2",
                               f"--judge_base_url={judge.base_url}"], capture_output=True, text=True, check=True)
    assert "agreement" in done.stdout and (out / "agree" / "j2" / "agreement.json").is_file()
    report = json.loads((out / "agree" / "j2" / "agreement.json").read_text(encoding="utf-8"))
    assert report["agreement"] == 1.0 and report["kappa"] == 1.0


def test_kappa_by_hand():
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    assert cohen_kappa([(True, False), (False, True)]) == -1.0
    assert cohen_kappa([(True, True)] * 3) == 1.0
