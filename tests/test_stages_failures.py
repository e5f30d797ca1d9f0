"""Loud, safe failures of the LLM stages against a real scripted server: requests that fail for good,
answers that cannot be used, empty results, a second run on the same output, and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpo.utils.io import output_lock

from tests.scripted_server import Reply, ScriptedServer
from tests.stages_fakes import profile_record, session_record, world, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SFT = ROOT / "src" / "dsc" / "sft_data_construction.py"
DPO = ROOT / "src" / "dsc" / "dpo_data_construction.py"
REVERSE = ROOT / "src" / "dsc" / "reverse_constrain.py"
PROFILES = ROOT / "src" / "utils" / "profile_generate.py"
FAILED = "item(s) failed and were not recorded as done (first: "
RETRY = "; rerun to retry exactly those"


def run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )


def last_error(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def ids(path: Path, key: str = "session_id") -> list[str]:
    return [json.loads(line)[key] for line in path.read_text().splitlines()]


def failing_for(*markers: str, roles: tuple[str, ...] | None = None):
    """The world, except that requests mentioning a marker fail for good (HTTP 500 past every retry)."""

    def handler(request):
        if (roles is None or request["model"] in roles) and any(m in json.dumps(request) for m in markers):
            return Reply(status=500)
        return world(request)

    return handler


def garbage_from(role: str):
    def handler(request):
        return "I would rather not say." if request["model"] == role else world(request)

    return handler


@pytest.fixture()
def server():
    with ScriptedServer(handler=world) as s:
        yield s


def test_sampling_failed_requests_are_counted_and_retried_by_the_rerun(server, tmp_path):
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(10)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None, concurrency=1)
    detail = tmp_path / "detail.jsonl"
    args = [f"--config={config}", f"--sessions_path={sessions}", f"--detail_path={detail}", "--n=2"]
    server.handler = failing_for("profile 3.", "profile 7.")  # 20% of the sessions
    result = run(DPO, *args, f"--output_dir={tmp_path}", "--concurrency=1", cwd=tmp_path)
    assert result.returncode == 1
    error = last_error(result)
    assert error.startswith(f"error: 2 {FAILED}s3: role ") and error.endswith(RETRY)
    assert "written 8" in result.stdout and "failed, not recorded (a rerun retries them) 2" in result.stdout
    assert "dpo records: " in result.stdout  # the summary and the dataset from what is done
    assert sorted(ids(detail)) == sorted(f"s{k}" for k in range(10) if k not in (3, 7))

    server.handler = world
    server.reset()
    again = run(DPO, *args, f"--output_dir={tmp_path}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "written 2, skipped (already done) 8" in again.stdout
    assert sorted(ids(detail)) == sorted(f"s{k}" for k in range(10))
    assert all("profile 3." in json.dumps(r) or "profile 7." in json.dumps(r) for r in server.chat_requests)


def test_sampling_with_no_usable_judge_answer_records_nothing(server, tmp_path):
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(3)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None, concurrency=1)
    detail = tmp_path / "detail.jsonl"
    args = [f"--config={config}", f"--sessions_path={sessions}", f"--detail_path={detail}"]
    server.handler = garbage_from("judge")
    result = run(DPO, *args, f"--output_dir={tmp_path}", "--n=2", "--concurrency=1", cwd=tmp_path)
    assert result.returncode == 1
    assert last_error(result) == f"error: 3 {FAILED}s0: no sample could be judged){RETRY}"
    assert detail.read_text() == "" and not (tmp_path / "dpo.json").exists()

    server.handler = world
    again = run(DPO, *args, f"--output_dir={tmp_path}", "--n=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(ids(detail)) == ["s0", "s1", "s2"]


def test_unusable_judge_answers_are_not_cached_so_a_rerun_asks_again(server, tmp_path):
    """A cached unusable answer would make "rerun to retry" a zero-call repeat of the same failure."""
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(0)])
    config = write_config(tmp_path / "p.yaml", server.base_url, tmp_path / "cache", concurrency=1)
    args = [f"--config={config}", f"--sessions_path={sessions}", f"--detail_path={tmp_path / 'detail.jsonl'}",
            f"--output_dir={tmp_path}", "--n=2", "--concurrency=1", "--no-trigger"]
    server.handler = garbage_from("judge")
    first = run(DPO, *args, cwd=tmp_path)
    assert first.returncode == 1
    assert "first unusable judge answer: 'I would rather not say.' (rerun to ask again)" in first.stdout
    judge_calls = sum(body["model"] == "judge" for body in server.chat_requests)
    assert judge_calls > 0

    server.reset()
    server.handler = world
    again = run(DPO, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sum(body["model"] == "judge" for body in server.chat_requests) > 0  # asked anew, not replayed
    assert sum(body["model"] == "response" for body in server.chat_requests) == 0  # usable answers cached


def test_a_detail_file_is_resumed_only_with_the_settings_it_was_made_with(server, tmp_path):
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(2)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    detail = tmp_path / "detail.jsonl"
    args = [f"--config={config}", f"--sessions_path={sessions}", f"--detail_path={detail}", f"--output_dir={tmp_path}"]
    assert run(DPO, *args, "--n=2", cwd=tmp_path).returncode == 0
    written = detail.read_text()
    again = run(DPO, *args, "--n=3", cwd=tmp_path)
    assert again.returncode == 2
    assert last_error(again) == (f"error: {detail}: line 1: made with samples_per_turn 2, not 3: resume it with the "
                                 "same settings or write to another output")
    assert detail.read_text() == written


def test_a_sessions_file_is_resumed_only_with_the_settings_it_was_made_with(server, tmp_path):
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(2)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    sessions = tmp_path / "sessions.jsonl"
    args = [f"--config={config}", f"--profiles={profiles}", f"--sessions_path={sessions}", f"--output_dir={tmp_path}"]
    first = run(SFT, *args, "--max_turns=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert {json.loads(line)["max_turns"] for line in sessions.read_text().splitlines()} == {2}
    written = sessions.read_text()
    again = run(SFT, *args, "--max_turns=3", cwd=tmp_path)
    assert again.returncode == 2
    assert last_error(again) == (f"error: {sessions}: line 1: made with max_turns 2, not 3: resume it with the "
                                 "same settings or write to another output")
    assert sessions.read_text() == written


def test_dpo_builder_says_when_it_built_nothing_and_builds_from_detail_alone(server, tmp_path):
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(2)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    one = tmp_path / "one.jsonl"
    result = run(
        DPO,
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--detail_path={one}",
        "--n=1",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "dpo records: 0" in result.stdout  # one sample per turn: no pair
    assert last_error(result) == "error: nothing built (DPO records: 0)"

    two = tmp_path / "two.jsonl"
    result = run(
        DPO,
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--detail_path={two}",
        "--n=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    built = json.loads((tmp_path / "data" / "dpo.json").read_text())
    server.reset()
    rebuilt = run(
        DPO, "--dataset_only", f"--detail_path={two}", f"--output_dir={tmp_path / 'again'}", cwd=tmp_path
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"dpo records: {len(built)} -> " in rebuilt.stdout and server.chat_requests == []
    assert json.loads((tmp_path / "again" / "dpo.json").read_text()) == built


def test_self_play_failures_and_unjudged_sessions_are_not_recorded(server, tmp_path):
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(4)])
    config = write_config(tmp_path / "p.yaml", server.base_url, None, concurrency=1)
    sessions = tmp_path / "sessions.jsonl"
    args = [
        f"--profiles={profiles}",
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--output_dir={tmp_path}",
        "--max_turns=2",
        "--n_candidates=2",
        "--concurrency=1",
    ]
    server.handler = failing_for("profile 2.")
    result = run(SFT, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert last_error(result).startswith(f"error: 1 {FAILED}p2: role ")
    assert "SFT dataset: " in result.stdout and sorted(ids(sessions)) == ["p0", "p1", "p3"]

    sessions.unlink()
    server.handler = garbage_from("judge")
    result = run(SFT, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert last_error(result) == f"error: 4 {FAILED}p0: no turn could be judged (unjudged)){RETRY}"
    assert sessions.read_text() == ""  # nothing "done": a healthy rerun plays every profile

    server.handler = world
    again = run(SFT, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "written 4" in again.stdout and sorted(ids(sessions)) == ["p0", "p1", "p2", "p3"]


def test_reversal_and_profile_generation_failures_are_retried_by_the_rerun(server, tmp_path):
    config = write_config(tmp_path / "p.yaml", server.base_url, None, concurrency=1)
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(3)])
    reversed_out = tmp_path / "rev.jsonl"
    args = [f"--input={profiles}", f"--output={reversed_out}", f"--config={config}"]
    server.handler = failing_for("profile 1.")
    result = run(REVERSE, *args, cwd=tmp_path)
    assert result.returncode == 1 and last_error(result).startswith(f"error: 1 {FAILED}p1: role ")
    assert sorted(ids(reversed_out, "id")) == ["p0", "p2"]
    server.handler = garbage_from("reverse")
    result = run(REVERSE, *args, cwd=tmp_path)
    assert last_error(result) == f"error: 1 {FAILED}p1: no usable reversal answer after retries){RETRY}"
    server.handler = world
    assert run(REVERSE, *args, cwd=tmp_path).returncode == 0
    assert sorted(ids(reversed_out, "id")) == ["p0", "p1", "p2"]

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a pirate\na baker\n", encoding="utf-8")
    out = tmp_path / "generated.jsonl"
    args = ["system", f"--input={seeds}", f"--output={out}", f"--config={config}"]
    server.handler = failing_for("a baker")
    result = run(PROFILES, *args, cwd=tmp_path)
    assert result.returncode == 1 and last_error(result).startswith(f"error: 1 {FAILED}seeds_2: role ")
    server.handler = world
    again = run(PROFILES, *args, cwd=tmp_path)
    assert again.returncode == 0 and "written 1, skipped (already done) 1" in again.stdout
    assert sorted(ids(out, "id")) == ["seeds_1", "seeds_2"]


def test_a_second_run_on_the_same_output_is_refused(server, tmp_path):
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(0)])
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(0)])
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a pirate\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cases = [
        (SFT, f"--profiles={profiles}", f"--config={config}", f"--sessions_path={out}"),
        (DPO, f"--config={config}", f"--sessions_path={sessions}", f"--detail_path={out}"),
        (REVERSE, f"--input={profiles}", f"--output={out}", f"--config={config}"),
        (PROFILES, "system", f"--input={seeds}", f"--output={out}", f"--config={config}"),
    ]
    with output_lock(out):
        for script, *args in cases:
            result = run(script, *args, cwd=tmp_path)
            assert result.returncode == 2 and last_error(result).startswith(
                f"error: {out}: another run is writing this output (pid {os.getpid()}"
            )
    assert server.chat_requests == [] and not out.exists()


@pytest.mark.parametrize("stage", ["self-play", "reversal", "profiles"])
def test_kill_9_midway_then_resume_loses_and_duplicates_nothing(server, tmp_path, stage):
    server.delay_s = 0.03
    config = write_config(tmp_path / "p.yaml", server.base_url, None, concurrency=1)
    out = tmp_path / "out.jsonl"
    if stage == "self-play":
        inputs = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(8)])
        script, key, expected = SFT, "session_id", [f"p{k}" for k in range(8)]
        args = [f"--profiles={inputs}", f"--sessions_path={out}", "--max_turns=2", "--n_candidates=1"]
        args.append(f"--output_dir={tmp_path}")
    elif stage == "reversal":
        inputs = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k) for k in range(20)])
        script, key, expected = REVERSE, "id", [f"p{k}" for k in range(20)]
        args = [f"--input={inputs}", f"--output={out}"]
    else:
        inputs = tmp_path / "seeds.txt"
        inputs.write_text("".join(f"seed number {k}\n" for k in range(20)), encoding="utf-8")
        script, key, expected = PROFILES, "id", [f"seeds_{k}" for k in range(1, 21)]
        args = ["system", f"--input={inputs}", f"--output={out}"]
    args += [f"--config={config}", "--concurrency=1"]
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out.exists() and len(out.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = [line for line in out.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(written) < len(expected), "the kill should land mid-run"

    server.delay_s = 0.0
    done = run(script, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = ids(out, key)
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    assert f"skipped (already done) {len(written)}" in done.stdout
