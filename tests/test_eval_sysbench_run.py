"""`sysbench.py run` against real OpenAI-compatible servers on 127.0.0.1.

- replayed model and judge answers (the fixture's recorded outputs) reproduce what `score` gives on
  SysBench's own output file, with the model's own history in the model's requests;
- a scripted judge with malformed, incomplete, over-complete and non-是/否 answers;
- kill -9 mid-run and resume: nothing lost, nothing repeated; a rerun makes zero calls;
- a tiny model served by `llamafactory-cli api` answers a dialogue end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpo.eval.sysbench_data import literal_mapping, load_judged
from rpo.eval.sysbench_metrics import sysbench_metrics
from rpo.utils.local_service import start_service
from rpo.utils.tiny_model import build_tiny_model

from tests.eval_servers import follow_all, judged_turn, replay_judge, replay_model
from tests.scripted_server import ScriptedServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
DATA = FIXTURES / "sysbench_data.json"
EVAL_OUTPUT = FIXTURES / "sysbench_eval_output.json"
SYSBENCH = [sys.executable, str(ROOT / "src" / "eval" / "sysbench.py")]


def _recorded() -> tuple[dict[str, str], dict[tuple[str, str], dict[str, str]]]:
    """The fixture's recorded answers (by query) and verdicts (by query and answer)."""
    answers, verdicts = {}, {}
    for dialogue in json.loads(EVAL_OUTPUT.read_text(encoding="utf-8")):
        conversation = dialogue["infer_results"]
        for query, answer in zip(conversation[1::2], conversation[2::2]):
            answers[query["content"]] = answer["content"]
        for query, result in (dialogue["eval_results"] or {}).items():
            verdicts[(query, result["response"])] = literal_mapping(result["评判结果"])
    return answers, verdicts


def _run_args(out: Path, model_url: str, judge_url: str, *extra: str) -> list[str]:
    return [*SYSBENCH, "run", f"--data={DATA}", f"--output_dir={out}", "--model=policy", f"--base_url={model_url}",
            "--judge_model=judge", f"--judge_base_url={judge_url}", *extra]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def replay_servers():
    answers, verdicts = _recorded()
    with ScriptedServer(handler=replay_model(answers)) as model, \
            ScriptedServer(handler=replay_judge(verdicts)) as judge:
        yield model, judge


def test_replayed_run_reproduces_score_and_rerun_makes_no_calls(tmp_path, replay_servers):
    model, judge = replay_servers
    out = tmp_path / "run"
    done = subprocess.run(_run_args(out, model.base_url, judge.base_url, "--concurrency=4"),
                          capture_output=True, text=True, check=True)
    expected = sysbench_metrics(load_judged(EVAL_OUTPUT))
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == expected
    assert "CSR     84.8 [" in done.stdout
    assert len(model.requests) == 25 and len(judge.requests) == 4 * 5 - 1 + 5 * 3  # one turn has no criteria
    # the model's own earlier answers are its history
    turn2 = next(r for r in model.chat_requests if r["messages"][-1]["content"] == "关于茶叶的第2个问题？")
    assert [m["content"] for m in turn2["messages"][1:3]] == ["关于茶叶的第1个问题？", "对话1的回答1。"]
    # the judge sees the system prompt, the history, the query and the answer verbatim
    prompt = next(r["messages"][0]["content"] for r in judge.chat_requests
                  if judged_turn(r["messages"][0]["content"]) == ("关于茶叶的第2个问题？", "对话1的回答2。"))
    assert "你是一位只谈论茶叶的助手。" in prompt and "对话1的回答1。" in prompt and "1. 回答须围绕茶叶 | 内容约束" in prompt
    english = next(r["messages"][0]["content"] for r in judge.chat_requests if "cooking" in r["messages"][0]["content"])
    assert english.startswith("You are an expert")

    score = subprocess.run([*SYSBENCH, "score", f"--eval_file={out}", "--json"], capture_output=True, text=True,
                           check=True)
    assert json.loads(score.stdout) == expected

    model.reset(), judge.reset()
    subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True, check=True)
    assert model.requests == [] and judge.requests == []
    # the records gone, the cache alone still answers everything
    (out / "responses.jsonl").unlink(), (out / "judgments.jsonl").unlink()
    subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True, check=True)
    assert model.requests == [] and judge.requests == []
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == expected


def test_reference_history(tmp_path, replay_servers):
    model, judge = replay_servers
    subprocess.run(_run_args(tmp_path / "run", model.base_url, judge.base_url, "--history=reference", "--limit=1"),
                   capture_output=True, text=True, check=True)
    turn2 = next(r for r in model.chat_requests if r["messages"][-1]["content"] == "关于茶叶的第2个问题？")
    assert turn2["messages"][2] == {"role": "assistant", "content": "参考回答1。"}


def test_scripted_judge_malformed_incomplete_and_other_verdicts(tmp_path):
    with ScriptedServer(handler=replay_model(_recorded()[0])) as model, ScriptedServer() as judge:
        judge.enqueue(
            "this is not JSON",  # turn 1: criteria 1, 2
            '{"评判理由": "r", "评判结果": {"1": "是"}}',  # incomplete
            '```json\n{"评判理由": "r", "评判结果": {"1": "是", "2": "否"}}\n```',
            '{"评判理由": "r", "评判结果": {"1": "部分遵循"}}',  # turn 2: a verdict that is neither 是 nor 否
            "garbage", "{broken", "still garbage",  # turn 3: never usable
            '{"评判结果": {"1": "是", "7": "是"}}',  # turn 4: a criterion that is not asked about
            '{"评判结果": {"1": "是"}}',
            '{"评判理由": "r", "评判结果": {1: "否"}}',  # turn 5: bare, integer key
        )
        out = tmp_path / "run"
        done = subprocess.run(_run_args(out, model.base_url, judge.base_url, "--limit=1", "--concurrency=1"),
                              capture_output=True, text=True, check=True)
        bodies = judge.chat_requests
    turns = _lines(out / "judgments.jsonl")
    assert [t["verdicts"] for t in turns] == [{"1": "是", "2": "否"}, {"1": "部分遵循"}, None, {"1": "是"}, {"1": "否"}]
    assert [t["attempts"] for t in turns] == [3, 1, 3, 2, 1]
    assert len(bodies) == 10
    assert "temperature" in bodies[1] and bodies[1]["temperature"] == 0.5 and bodies[1]["seed"] == 1
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["CSR"], metrics["ISR"], metrics["SSR"], metrics["unjudged"]) == (2 / 5, 2 / 4, 0.0, 1)
    assert "1 turns stayed unjudged" in done.stderr


def _wait_for_lines(path: Path, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines")


def test_kill_and_resume_loses_and_repeats_nothing(tmp_path):
    answers, verdicts = _recorded()
    with ScriptedServer(handler=replay_model(answers), delay_s=0.1) as model, \
            ScriptedServer(handler=replay_judge(verdicts), delay_s=0.1) as judge:
        out = tmp_path / "run"
        args = _run_args(out, model.base_url, judge.base_url, "--concurrency=2")
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_lines(out / "judgments.jsonl", 6)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not (out / "metrics.json").exists()
        partial = len(_lines(out / "judgments.jsonl"))
        assert partial < 25
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        assert "resuming:" in done.stderr
        model_calls, judge_calls = len(model.requests), len(judge.requests)
    responses, judgments = _lines(out / "responses.jsonl"), _lines(out / "judgments.jsonl")
    assert sorted((r["system_id"], r["turn"]) for r in responses) == [(s, k) for s in range(1, 6) for k in range(1, 6)]
    assert sorted((j["system_id"], j["turn"]) for j in judgments) == [(s, k) for s in range(1, 6) for k in range(1, 6)]
    # only the requests in flight at the kill (at most 2) were sent again
    assert 25 <= model_calls <= 25 + 2 and 34 <= judge_calls <= 34 + 2
    expected = sysbench_metrics(load_judged(EVAL_OUTPUT))
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == expected


def test_second_run_on_the_same_directory_is_refused(tmp_path):
    from rpo.utils.io import output_lock

    out = tmp_path / "run"
    with output_lock(out):
        done = subprocess.run(_run_args(out, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
                              capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "another run is writing this output" in done.stderr


def test_tiny_model_served_by_llamafactory_answers_end_to_end(tmp_path):
    model_dir = build_tiny_model(tmp_path / "model")
    with ScriptedServer(handler=follow_all) as judge, start_service(
        "llamafactory", str(model_dir), name="policy", served_model_name="policy",
        state_dir=tmp_path / "services", timeout_s=300,
    ) as service:
        out = tmp_path / "run"
        done = subprocess.run(_run_args(out, service.base_url, judge.base_url, "--limit=1", "--max_tokens=8"),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        prompts = [r["messages"][0]["content"] for r in judge.chat_requests]
    responses = _lines(out / "responses.jsonl")
    assert [r["turn"] for r in responses] == [1, 2, 3, 4, 5] and {r["model"] for r in responses} == {"policy"}
    assert all(isinstance(r["response"], str) for r in responses)
    assert responses[1]["messages"][2] == {"role": "assistant", "content": responses[0]["response"]}
    assert len(prompts) == 5
    assert all(f"<assistant>\n{r['response']}\n</assistant>\n\n# 评判细则" in p for r, p in zip(responses, prompts))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["CSR"], metrics["ISR"], metrics["SSR"], metrics["turns"]) == (1.0, 1.0, 1.0, 5)
    assert "response" in done.stderr and "judge" in done.stderr  # the usage table


def test_resuming_with_another_model_is_refused(tmp_path, replay_servers):
    model, judge = replay_servers
    out = tmp_path / "run"
    subprocess.run(_run_args(out, model.base_url, judge.base_url, "--limit=1"), capture_output=True, text=True,
                   check=True)
    args = [a.replace("--model=policy", "--model=other") for a in _run_args(out, model.base_url, judge.base_url)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {out / 'responses.jsonl'}: holds records of policy, not other: use another --output_dir"]
