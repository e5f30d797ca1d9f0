"""`multi_if.py run` against a scripted model on 127.0.0.1: three steps in one conversation with the
model's own answers as history, metrics equal to `score` on the same answers, resume and no re-calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rpo.eval.multi_if.data import load_responses, load_rows
from rpo.eval.multi_if.run import score
from rpo.eval.multi_if.summary import multi_if_metrics

from tests.eval_servers import replay_model
from tests.scripted_server import Reply, ScriptedServer
from tests.test_eval_ifeval_score import MULTI_IF_RESPONSES, _write_responses

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures" / "eval" / "multi_if.csv"
MULTI_IF = [sys.executable, str(ROOT / "src" / "eval" / "multi_if.py")]


def test_run_answers_steps_in_one_conversation(tmp_path, capsys):
    rows = load_rows(DATA)
    answers = {step.example.prompt: MULTI_IF_RESPONSES[(row.key, step.number)] for row in rows for step in row.steps}
    out = tmp_path / "run"
    args = [*MULTI_IF, "run", f"--data={DATA}", f"--output_dir={out}", "--model=policy"]
    with ScriptedServer(handler=replay_model(answers)) as model:
        args.append(f"--base_url={model.base_url}")
        # a run cut short after the first row: the second run answers only the rest
        subprocess.run([*args, "--limit=1"], capture_output=True, text=True, check=True)
        assert len(model.requests) == 3
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        assert len(model.requests) == 8 and "resuming: 3 steps" in done.stderr
        [third] = [r["messages"] for r in model.chat_requests if r["messages"][-1]["content"] == rows[1].steps[2].example.prompt]
        assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
        assert third[1]["content"] == MULTI_IF_RESPONSES[("z1", 1)] and third[3]["content"] == MULTI_IF_RESPONSES[("z1", 2)]
        model.reset()
        subprocess.run(args, capture_output=True, text=True, check=True)
        assert model.requests == []
        changed = subprocess.run([*args, "--temperature=0.5"], capture_output=True, text=True, check=False)
        assert changed.returncode == 2 and model.requests == []
        assert "was run with decoding=" in changed.stderr and len(changed.stderr.strip().splitlines()) == 1
    expected = multi_if_metrics(rows, load_responses(_write_responses(tmp_path / "r.jsonl"), rows))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == json.loads(json.dumps(expected))
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["model"] == "policy" and record["languages"] is None and len(record["data_sha256"]) == 64
    assert "step" in done.stdout and "mean [95% CI]" in done.stdout
    score(data=str(DATA), responses=str(out), json=True)
    assert json.loads(capsys.readouterr().out)["steps"] == metrics["steps"]


def test_a_failed_conversation_is_reported_and_resumed(tmp_path):
    """A request that fails for good stops its own conversation only; the rerun answers just that."""
    rows = load_rows(DATA, ["hi", "zh"])
    answers = {step.example.prompt: MULTI_IF_RESPONSES[(row.key, step.number)] for row in rows for step in row.steps}
    broken = next(row for row in rows if row.key == "h1").steps[1].example.prompt
    failing = {broken}

    def handler(request):
        prompt = request["messages"][-1]["content"]
        return Reply(status=400) if prompt in failing else answers[prompt]

    out = tmp_path / "run"
    with ScriptedServer(handler=handler) as model:
        args = [*MULTI_IF, "run", f"--data={DATA}", f"--output_dir={out}", "--model=policy",
                f"--base_url={model.base_url}", "--languages=zh,hi"]
        first = subprocess.run(args, capture_output=True, text=True, check=False)
        assert first.returncode == 1 and not (out / "metrics.json").exists()
        assert "1 of 2 conversations stopped" in first.stderr and "key h1 step 2" in first.stderr
        assert len((out / "responses.jsonl").read_text(encoding="utf-8").splitlines()) == 4
        failing.clear()
        model.reset()
        second = subprocess.run(args, capture_output=True, text=True, check=True)
        assert [r["messages"][-1]["content"] for r in model.chat_requests] == [broken]
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["n"] == 2
    assert "paper's figure (English + Chinese): not computed" in second.stdout
