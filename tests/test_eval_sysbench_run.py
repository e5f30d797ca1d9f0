"""`sysbench.py run` against real OpenAI-compatible servers on 127.0.0.1.

- replayed model and judge answers (the fixture's recorded outputs) reproduce what `score` gives on
  SysBench's own output file, with the model's own history in the model's requests;
- `--sysbench_dir`: a stand-in checkout's `get_eval_pattern` builds every judge request, read by
  SysBench's strict rule on its schedule of temperatures;
- a scripted judge with malformed, incomplete, over-complete and unknown-word answers; a turn never
  judged leaves the run incomplete (exit 1, no figures) and a rerun asks for exactly it again;
- failed requests do not stop the run; a resume with other settings is refused;
- kill -9 mid-run and resume: nothing lost, nothing repeated; a rerun makes zero calls;
- a tiny model served by `llamafactory-cli api` answers a dialogue end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpo.eval.sysbench.data import literal_mapping, load_judged
from rpo.eval.sysbench.metrics import sysbench_metrics
from rpo.utils.local_service import start_service
from rpo.utils.tiny_model import build_tiny_model

from tests.eval_servers import (
    follow_all,
    judged_turn,
    make_checkout,
    replay_judge,
    replay_model,
    standin_judge,
    standin_turn,
)
from tests.scripted_server import Reply, ScriptedServer

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


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _figures(metrics: dict) -> dict:
    """What a run and `score` of SysBench's file must agree on (the run adds what it was run with)."""
    drop = {"judge", "history", "decoding", "data_sha256", "think_stripped", "failures", "warnings"}
    return {k: v for k, v in metrics.items() if k not in drop}


def test_replayed_run_reproduces_score_and_rerun_makes_no_calls(tmp_path, replay_servers):
    model, judge = replay_servers
    out = tmp_path / "run"
    done = subprocess.run(_run_args(out, model.base_url, judge.base_url, "--concurrency=4"),
                          capture_output=True, text=True, check=True)
    expected = sysbench_metrics(load_judged(EVAL_OUTPUT))
    metrics = _metrics(out)
    assert _figures(metrics) == expected
    assert metrics["judge"]["prompt"] == "own" and "not comparable" in metrics["judge"]["note"]
    assert (metrics["history"], metrics["decoding"], metrics["think_stripped"]) == (
        "own", {"temperature": 0.0, "top_p": None, "max_tokens": 1024}, 0)
    assert metrics["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert "CSR     81.58 [" in done.stdout and "not comparable with SysBench's published ones" in done.stdout
    assert len(model.requests) == 25 and len(judge.requests) == 24  # one turn has no criteria
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
    scored = json.loads(score.stdout)
    assert _figures(scored) == expected and scored["judge"] == {"model": "judge", "prompt": "own"}

    model.reset(), judge.reset()
    subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True, check=True)
    assert model.requests == [] and judge.requests == []
    # the records gone, the cache alone still answers everything
    (out / "responses.jsonl").unlink(), (out / "judgments.jsonl").unlink()
    subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True, check=True)
    assert model.requests == [] and judge.requests == []
    assert _figures(_metrics(out)) == expected


def test_sysbench_checkout_builds_every_judge_request(tmp_path):
    answers, verdicts = _recorded()
    checkout = make_checkout(tmp_path / "SysBench", DATA)
    with ScriptedServer(handler=replay_model(answers)) as model, \
            ScriptedServer(handler=standin_judge(verdicts)) as judge:
        out = tmp_path / "run"
        done = subprocess.run(
            [*SYSBENCH, "run", f"--sysbench_dir={checkout}", f"--output_dir={out}", "--model=policy",
             f"--base_url={model.base_url}", f"--judge_base_url={judge.base_url}", "--concurrency=4"],
            capture_output=True, text=True, check=False)
        bodies = judge.chat_requests
    assert done.returncode == 0, done.stderr
    assert _figures(_metrics(out)) == sysbench_metrics(load_judged(EVAL_OUTPUT))
    assert _metrics(out)["judge"] == {"model": "gpt-4o-2024-05-13", "prompt": "sysbench"}
    assert len(bodies) == 24 and {b["model"] for b in bodies} == {"gpt-4o-2024-05-13"}
    assert all(b["temperature"] == 0.0 and len(b["messages"]) == 1 and b["messages"][0]["role"] == "user"
               for b in bodies)
    # the request is the checkout's text for the conversation as the model saw it
    request = next(b["messages"][0]["content"] for b in bodies
                   if standin_turn(b["messages"][0]["content"]) == ("关于茶叶的第2个问题？", "对话1的回答2。"))
    assert request.splitlines()[:6] == [
        "STAND-IN JUDGE REQUEST", "[system] 你是一位只谈论茶叶的助手。回答要分点列出，语气亲切。",
        "[user] 关于茶叶的第1个问题？", "[assistant] 对话1的回答1。", "[user] 关于茶叶的第2个问题？",
        "[assistant] 对话1的回答2。"]
    assert "SysBench's own judge request" in done.stdout


def test_sysbench_schedule_strict_parse_and_retry_of_unjudged_turns(tmp_path):
    answers, verdicts = _recorded()
    checkout = make_checkout(tmp_path / "SysBench", DATA)
    fenced = standin_judge(verdicts)
    with ScriptedServer(handler=replay_model(answers)) as model, ScriptedServer(handler=fenced) as judge:
        # turn 1 of dialogue 1 (criteria 1, 2): bare JSON, a cut-off answer, a missing and an extra criterion,
        # an unknown word, then one usable answer; every other turn is answered by the handler
        good = fenced({"messages": [{"content": "[user] 关于茶叶的第1个问题？\n[assistant] 对话1的回答1。"}]})
        cut = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": good}, "finish_reason": "length"}]})
        judge.enqueue('{"评判理由": "r", "评判结果": {"1": "是", "2": "是"}}', Reply(body=cut),
                      "\'\'\'json\n{'评判理由': 'r', '评判结果': {1: '是'}}\n\'\'\'",
                      "\'\'\'json\n{'评判理由': 'r', '评判结果': {1: '是', 2: '是', 3: '是'}}\n\'\'\'",
                      "\'\'\'json\n{'评判理由': 'r', '评判结果': {1: '是', 2: 'yes'}}\n\'\'\'", good)
        out = tmp_path / "run"
        args = [*SYSBENCH, "run", f"--sysbench_dir={checkout}", f"--output_dir={out}", "--model=policy",
                f"--base_url={model.base_url}", f"--judge_base_url={judge.base_url}", "--limit=1",
                "--concurrency=1"]
        subprocess.run(args, capture_output=True, text=True, check=True)
        first = [b["temperature"] for b in judge.chat_requests]
        assert first == [0.0] * 5 + [0.5] + [0.0] * 4  # six attempts for turn 1 (the sixth at 0.5), then one a turn
        assert _lines(out / "judgments.jsonl")[0]["attempts"] == 6

        # a turn whose judge never answers usably: 5 attempts at 0, 5 at 0.5, reported, no figures
        shutil.rmtree(out)
        judge.reset()
        judge.handler = lambda request: ("never usable" if "第3个" in standin_turn(request["messages"][0]["content"])[0]
                                         else fenced(request))
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        assert done.returncode == 1
        temperatures = [b["temperature"] for b in judge.chat_requests
                        if standin_turn(b["messages"][0]["content"])[0] == "关于茶叶的第3个问题？"]
        assert temperatures == [0.0] * 5 + [0.5] * 5
        assert ("failed: system_id 1 turn 3: no usable judge answer in 10 attempts (first: 'never usable')"
                in done.stderr)
        metrics = _metrics(out)
        assert metrics["complete"] is False and metrics["CSR"] is None and metrics["unjudged"] == 1
        assert "CSR       n/a" in done.stdout and "INCOMPLETE: 1 of 5 turns not yet answered or judged" in done.stdout

        # the rerun asks exactly that turn again (an unusable answer was never cached) and completes
        judge.reset()
        judge.handler = fenced
        model.reset()
        subprocess.run(args, capture_output=True, text=True, check=True)
        assert len(judge.requests) == 1 and model.requests == []
        assert _metrics(out)["complete"] is True


def test_failed_requests_do_not_stop_the_run_and_a_rerun_resumes_the_rest(tmp_path):
    answers, verdicts = _recorded()
    broken = {"关于茶叶的第3个问题？"}  # dialogue 1, turn 3: its answer fails for good

    def model_handler(request):
        query = request["messages"][-1]["content"]
        return Reply(status=400) if query in broken else answers[query]

    with ScriptedServer(handler=model_handler) as model, ScriptedServer(handler=replay_judge(verdicts)) as judge:
        out = tmp_path / "run"
        done = subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True,
                              check=False)
        assert done.returncode == 1
        assert "failed: system_id 1 turn 3: no answer, so turns 3-5 wait" in done.stderr
        assert len(_lines(out / "judgments.jsonl")) == 22 and _metrics(out)["complete"] is False
        # a score of the folder says the figures are incomplete too
        score = subprocess.run([*SYSBENCH, "score", f"--eval_file={out}"], capture_output=True, text=True,
                               check=False)
        assert score.returncode == 1 and "3 of 25 turns not yet answered or judged" in score.stdout
        broken.clear()
        model.reset(), judge.reset()
        subprocess.run(_run_args(out, model.base_url, judge.base_url), capture_output=True, text=True, check=True)
        assert len(model.requests) == 3 and len(judge.requests) == 3
    assert _figures(_metrics(out)) == sysbench_metrics(load_judged(EVAL_OUTPUT))


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
            '{"评判理由": "r", "评判结果": {"1": "部分遵循"}}',  # turn 2: not one of SysBench's words
            '{"评判理由": "r", "评判结果": {"1": "不适用"}}',
            '{"评判结果": {"1": "是", "7": "是"}}',  # turn 3 (criteria 1, 2): a criterion that is not asked about
            '{"评判结果": {"1": "是", "2": "否"}}',
            '{"评判理由": "r", "评判结果": {1: "否"}}',  # turn 4: bare, integer key
            '{"评判理由": "r", "评判结果": {"1": "是"}}',  # turn 5
        )
        out = tmp_path / "run"
        subprocess.run(_run_args(out, model.base_url, judge.base_url, "--limit=1", "--concurrency=1"),
                       capture_output=True, text=True, check=True)
        bodies = judge.chat_requests
    turns = _lines(out / "judgments.jsonl")
    assert [t["verdicts"] for t in turns] == [{"1": "是", "2": "否"}, {"1": "不适用"}, {"1": "是", "2": "否"},
                                              {"1": "否"}, {"1": "是"}]
    assert [t["attempts"] for t in turns] == [3, 2, 2, 1, 1]
    assert len(bodies) == 9 and all(b["temperature"] == 0.0 for b in bodies)
    metrics = _metrics(out)
    # 不适用 fails turn 2 as 否 does the others; only turn 5 is followed
    assert (metrics["CSR"], metrics["ISR"], metrics["SSR"], metrics["unjudged"]) == (r4(3 / 7), r4(1 / 5), 0.0, 0)


def r4(x: float) -> float:
    return round(x, 4)


def test_settings_are_recorded_and_a_resume_with_others_is_refused(tmp_path, replay_servers):
    model, judge = replay_servers
    out = tmp_path / "run"
    subprocess.run(_run_args(out, model.base_url, judge.base_url, "--limit=1"), capture_output=True, text=True,
                   check=True)
    recorded = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert recorded["judge"] == {"model": "judge", "prompt": "own"} and recorded["turns"] == 5
    for extra, name in (("--temperature=0.7", "decoding"), ("--history=reference", "history"),
                        ("--keep_think", "keep_think"), ("--judge_model=other", "judge")):
        args = [a for a in _run_args(out, model.base_url, judge.base_url, "--limit=1", extra)
                if not (extra.startswith("--judge_model") and a == "--judge_model=judge")]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        assert done.returncode == 2 and done.stderr.strip().startswith(f"error: {out}: was run with {name}="), extra
    other_data = tmp_path / "other.json"
    other_data.write_text(DATA.read_text(encoding="utf-8").replace("茶叶", "咖啡"), encoding="utf-8")
    args = [a.replace(f"--data={DATA}", f"--data={other_data}") for a in _run_args(out, model.base_url,
                                                                                     judge.base_url, "--limit=1")]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "was run with data_sha256=" in done.stderr


def test_config_judge_model_is_used_and_think_blocks_are_stripped(tmp_path):
    answers, verdicts = _recorded()
    thinking = {q: f"<think>plan {i}</think>\n{a}" for i, (q, a) in enumerate(answers.items())}
    with ScriptedServer(handler=replay_model(thinking)) as model, \
            ScriptedServer(handler=replay_judge(verdicts)) as judge:
        config = tmp_path / "local.yaml"
        config.write_text(f"roles:\n  response: {{model: policy, base_url: {model.base_url}, api_key_env: null, "
                          f"temperature: 0.0}}\n  judge: {{model: config-judge, base_url: {judge.base_url}, "
                          "api_key_env: null, temperature: 0.0}\n", encoding="utf-8")
        out = tmp_path / "run"
        done = subprocess.run([*SYSBENCH, "run", f"--data={DATA}", f"--output_dir={out}", f"--config={config}",
                               "--limit=1"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert {b["model"] for b in judge.chat_requests} == {"config-judge"}
        judged = [b["messages"][0]["content"] for b in judge.chat_requests]
    metrics = _metrics(out)
    assert metrics["think_stripped"] == 5 and metrics["judge"]["model"] == "config-judge"
    assert not any("<think>" in prompt for prompt in judged)
    responses = _lines(out / "responses.jsonl")
    assert responses[0]["response"] == "对话1的回答1。" and responses[0]["raw"].startswith("<think>plan")
    assert "answers with a <think> block removed: 5" in done.stdout


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
    assert 25 <= model_calls <= 25 + 2 and 24 <= judge_calls <= 24 + 2
    assert _figures(_metrics(out)) == sysbench_metrics(load_judged(EVAL_OUTPUT))


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
    args = [a.replace("--model=policy", "--model=other")
            for a in _run_args(out, model.base_url, judge.base_url, "--limit=1")]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    expected = (f'error: {out}: was run with model="policy", not "other": rerun with the same settings or use '
                "another output folder")
    assert done.stderr.strip().splitlines() == [expected]


def test_answers_cut_off_and_all_alike_are_warned_about(tmp_path):
    cut = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "policy", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Sure"}, "finish_reason": "length"}]})
    with ScriptedServer(handler=lambda request: Reply(body=cut)) as model, ScriptedServer(handler=follow_all) as judge:
        out = tmp_path / "run"
        done = subprocess.run(_run_args(out, model.base_url, judge.base_url, "--limit=1"), capture_output=True,
                              text=True, check=True)
    warnings = _metrics(out)["warnings"]
    assert warnings == [
        "5 of 5 answers were cut off at the token limit (finish_reason length): raise --max_tokens",
        "5 of 5 answers are the same text ('Sure'): the model ignores its input"]
    assert all(f"warning: {w}" in done.stderr for w in warnings)
    assert all(r["truncated"] for r in _lines(out / "responses.jsonl"))
