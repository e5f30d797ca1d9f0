"""`multi_if.py run` against a scripted model on 127.0.0.1: three steps in one conversation with the
model's own answers as history, metrics equal to `score` on the same answers, resume and no re-calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rpo.eval.multi_if import multi_if_metrics
from rpo.eval.multi_if_data import load_responses, load_rows

from tests.eval_servers import replay_model
from tests.scripted_server import ScriptedServer
from tests.test_eval_ifeval_score import MULTI_IF_RESPONSES, _write_responses

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "eval" / "multi_if.csv"
MULTI_IF = [sys.executable, str(ROOT / "src" / "eval" / "multi_if.py")]


def test_run_answers_steps_in_one_conversation(tmp_path):
    rows = load_rows(DATA)
    answers = {step.prompt: MULTI_IF_RESPONSES[(row.key, k)] for row in rows for k, step in enumerate(row.steps, 1)}
    out = tmp_path / "run"
    args = [*MULTI_IF, "run", f"--data={DATA}", f"--output_dir={out}", "--model=policy"]
    with ScriptedServer(handler=replay_model(answers)) as model:
        args.append(f"--base_url={model.base_url}")
        # a run cut short after the first row: the second run answers only the rest
        subprocess.run([*args, "--limit=1"], capture_output=True, text=True, check=True)
        assert len(model.requests) == 3
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        assert len(model.requests) == 6 and "resuming: 3 steps" in done.stderr
        third = model.chat_requests[-1]["messages"]
        assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
        assert third[1]["content"] == MULTI_IF_RESPONSES[("z1", 1)] and third[3]["content"] == MULTI_IF_RESPONSES[("z1", 2)]
        model.reset()
        subprocess.run(args, capture_output=True, text=True, check=True)
        assert model.requests == []
    expected = multi_if_metrics(rows, load_responses(_write_responses(tmp_path / "r.jsonl"), rows))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == json.loads(json.dumps(expected))
    assert "step" in done.stdout and "mean [95% CI]" in done.stdout
    score = subprocess.run([*MULTI_IF, "score", f"--data={DATA}", f"--responses={out}", "--json"],
                           capture_output=True, text=True, check=True)
    assert json.loads(score.stdout)["steps"] == metrics["steps"]
