"""The sampling stage (dpo_data_construction): detail records, resume after SIGKILL, cache, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.roles.conversation import LLMResponder
from rpo.utils.roles.judge import LLMJudge
from rpo.utils.roles.reverser import LLMReverser
from rpo.utils.schema import SelfPlaySession, SessionDetail
from rpo.utils.stages.sampling import sample_sessions

from tests.scripted_server import ScriptedServer
from tests.stages_fakes import fake_follows, session_record, world, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
STAGE = [sys.executable, str(ROOT / "src" / "dsc" / "dpo_data_construction.py")]


@pytest.fixture()
def server():
    with ScriptedServer(handler=world) as s:
        yield s


def run_stage(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*STAGE, *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=120)


def test_sample_sessions_writes_spec_detail_and_resumes(server, tmp_path):
    config = PipelineConfig.load(write_config(tmp_path / "p.yaml", server.base_url, None))
    sessions = [SelfPlaySession.model_validate(session_record(k)) for k in range(3)]
    sessions.append(SelfPlaySession.model_validate({**session_record(9), "turns": []}))
    out = tmp_path / "detail.jsonl"

    async def go(items):
        async with LLMClient(config) as client:
            return await sample_sessions(
                items,
                LLMResponder(client),
                LLMJudge(client, lang="en"),
                LLMReverser(client, lang="en"),
                n=3,
                concurrency=2,
                output_path=out,
                lang="en",
                extras={"sampler_model": "response"},
                desc=None,
            )

    stats = asyncio.run(go(sessions[:2]))
    assert stats.sessions == 2 and stats.samples == 12 and stats.unjudged == 0
    stats = asyncio.run(go(sessions))
    assert stats.skipped == 2 and stats.sessions == 1  # the session without turns has nothing to sample
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["session_id"] for r in records) == ["s0", "s1", "s2"]
    for record in records:
        detail = SessionDetail.model_validate(record)
        assert set(record) >= {"session_id", "profile", "reversed_constraints", "turns"}
        assert set(record["profile"]) == {"name", "description", "skills", "constraints"}
        assert record["reversed_constraints"][-1] is None  # "The audience is ..." cannot be reversed
        assert record["reversed_constraints"][0] == "Do not: " + detail.profile.constraints[0]
        assert record["sampler_model"] == "response"
        for t, turn in enumerate(detail.turns):
            k = record["session_id"][1:]
            assert turn.query == f"q{k}.{t}" and turn.reference_response == f"ref{k}.{t}"
            assert len(turn.samples) == 3 and len({s.response for s in turn.samples}) == 3
            for sample in turn.samples:
                assert sample.follows == [
                    fake_follows(sample.response, c) for c in detail.profile.constraints
                ]
    # the policy saw the earlier turns' reference responses as history, and the plain query
    second_turn = [
        r for r in server.chat_requests if r["model"] == "response" and r["messages"][-1]["content"] == "q0.1"
    ]
    assert len(second_turn) == 1
    assert [m["content"] for m in second_turn[0]["messages"][1:]] == ["q0.0", "ref0.0", "q0.1"]
    assert second_turn[0]["messages"][0]["role"] == "system"
    assert "Constraint 0 of profile 0." in second_turn[0]["messages"][0]["content"]


def test_kill_midway_then_resume_loses_and_duplicates_nothing(server, tmp_path):
    server.delay_s = 0.03
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(10)])
    config = write_config(tmp_path / "p.yaml", server.base_url, tmp_path / "cache", concurrency=1)
    detail = tmp_path / "out" / "detail.jsonl"
    args = [
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--detail_path={detail}",
        f"--output_dir={tmp_path / 'out'}",
        "--n=2",
        "--concurrency=1",
    ]
    proc = subprocess.Popen([*STAGE, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if detail.exists() and len(detail.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = [json.loads(line) for line in detail.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(written) < 10, "the kill should land mid-run"

    server.delay_s = 0.0
    done = run_stage(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["session_id"] for line in detail.read_text().splitlines()]
    assert sorted(ids) == sorted(f"s{k}" for k in range(10)) and len(ids) == len(set(ids))
    assert f"skipped (already done) {len(written)}" in done.stdout
    assert "unjudged 0" in done.stdout and "total" in done.stderr  # counts, and the usage table (stderr)
    assert (tmp_path / "out" / "dpo.json").is_file()
    assert "dpo" in json.loads((tmp_path / "out" / "dataset_info.json").read_text())

    # a fresh output with the same cache costs no calls at all
    before = len(server.requests)
    again = run_stage(
        *[a for a in args if not a.startswith("--detail_path")],
        f"--detail_path={tmp_path / 'again.jsonl'}",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == before
    first = {
        json.loads(line)["session_id"]: json.loads(line)["turns"] for line in detail.read_text().splitlines()
    }
    second = {
        json.loads(line)["session_id"]: json.loads(line)["turns"]
        for line in (tmp_path / "again.jsonl").read_text().splitlines()
    }
    strip = lambda turns: [[(s["response"], s["follows"]) for s in t["samples"]] for t in turns]
    assert {k: strip(v) for k, v in first.items()} == {k: strip(v) for k, v in second.items()}


def test_bad_input_one_line_exit_2(server, tmp_path):
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    bad = session_record(1)
    del bad["profile"]["constraints"]
    sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(0), bad])
    result = run_stage(
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--detail_path={tmp_path / 'd.jsonl'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "sessions.jsonl: line 2 (record s1): field profile.constraints" in lines[0]
    assert server.requests == [] and not (tmp_path / "d.jsonl").exists()

    result = run_stage(f"--config={config}", f"--sessions_path={sessions}", "--n=0", cwd=tmp_path)
    assert result.returncode == 2 and "--n" in result.stderr
    result = run_stage(f"--config={tmp_path / 'missing.yaml'}", f"--sessions_path={sessions}", cwd=tmp_path)
    assert result.returncode == 2 and "missing.yaml: file not found" in result.stderr
