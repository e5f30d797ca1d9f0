"""Self-play SFT stage and profile generation against a scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rpo.utils.roles.protocols import Reply
from rpo.utils.schema import ProfileCore, SelfPlaySession, SystemProfile, UserProfile, Verdicts
from rpo.utils.stages.selfplay import SelfPlayStats, self_play

from tests.scripted_server import ScriptedServer
from tests.stages_fakes import fake_triggered, profile_record, world, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SFT = [sys.executable, str(ROOT / "src" / "dsc" / "sft_data_construction.py")]
PROFILES = [sys.executable, str(ROOT / "src" / "utils" / "profile_generate.py")]
REVERSE = [sys.executable, str(ROOT / "src" / "dsc" / "reverse_constrain.py")]
PROFILE = ProfileCore(name="Bot", constraints=["a", "b", "c", "d", "e"])


class ScriptedUser:
    async def next_query(self, profile, history, turn):
        return f"q{turn}"


class EchoResponder:
    def __init__(self):
        self.seen = []

    async def respond(self, messages, n):
        self.seen.append(messages)
        return [Reply(f"r{len(self.seen)}-{i}") for i in range(n)]


class TableJudge:
    """Follow rates scripted per response text."""

    def __init__(self, table):
        self.table = table

    async def judge(self, profile, history, query, response):
        k = self.table.get(response, 5)
        return Verdicts(follows=None if k is None else [i < k for i in range(len(profile.constraints))])


class CountingRefiner:
    def __init__(self):
        self.calls = 0

    async def refine(self, profile, history, query, response, verdicts):
        self.calls += 1
        return Reply(f"{response}+fix{self.calls}")


def play(table, max_turns=5, refiner=None):
    responder = EchoResponder()
    session = asyncio.run(
        self_play(
            PROFILE,
            ScriptedUser(),
            responder,
            TableJudge(table),
            max_turns=max_turns,
            refiner=refiner,
            session_id="s",
            lang="en",
        )
    )
    return session, responder


def test_turns_kept_until_max_turns_with_restated_constraints():
    session, responder = play({}, max_turns=3)
    assert [t.query for t in session.turns] == ["q0", "q1", "q2"] and session.end_reason == "max_turns"
    last = responder.seen[-1]
    assert last[0]["role"] == "system"
    assert [m["content"] for m in last[1:5]] == ["q0", "r1-0", "q1", "r2-0"]  # plain history
    assert last[-1]["content"].startswith("q2") and "[5] e" in last[-1]["content"]  # constraints restated


class FixedTrigger:
    def __init__(self, triggered):
        self.triggered = triggered

    async def select(self, profile, history, query):
        return self.triggered


def test_response_request_restates_the_triggered_constraints_only():
    responder = EchoResponder()
    asyncio.run(
        self_play(PROFILE, ScriptedUser(), responder, TableJudge({}), max_turns=1, session_id="s", lang="en",
                  trigger=FixedTrigger([1, 3]))
    )
    request = responder.seen[0][-1]["content"]
    assert request == (
        "q0\n\n(While answering, be sure to keep to these rules of your system prompt:\n[1] b\n[2] d\n"
        "Reply to the message above directly, without mentioning these rules.)"
    )
    assert "1. a" in responder.seen[0][0]["content"]  # the system prompt still holds every constraint
    responder = EchoResponder()
    asyncio.run(
        self_play(PROFILE, ScriptedUser(), responder, TableJudge({}), max_turns=1, session_id="s", lang="en",
                  trigger=FixedTrigger([]))
    )
    assert responder.seen[0][-1]["content"] == "q0"  # nothing triggered: nothing restated


def test_refines_below_threshold_and_keeps_the_turn_when_fixed():
    refiner = CountingRefiner()
    session, _ = play({"r2-0": 3, "r2-0+fix1": 3, "r2-0+fix1+fix2": 4}, max_turns=2, refiner=refiner)
    assert refiner.calls == 2  # each rewrite starts from the best version so far
    assert session.turns[1].reference_response == "r2-0+fix1+fix2" and session.turns[1].refinements == 2


def test_session_ends_when_three_refinements_do_not_reach_80_percent():
    refiner = CountingRefiner()
    table = {"r2-0": 1, "r2-0+fix1": 3, "r2-0+fix1+fix2": 3, "r2-0+fix1+fix2+fix3": 2}
    session, _ = play(table, refiner=refiner)
    assert refiner.calls == 3 and len(session.turns) == 1 and session.end_reason == "below_threshold"


class CutResponder:
    """The first candidate of every request is cut off by the token cap."""

    async def respond(self, messages, n):
        return [Reply("cut", truncated=True), *(Reply(f"ok{i}") for i in range(1, n))]


def test_truncated_candidates_are_never_judged_nor_kept():
    judge = TableJudge({"cut": 5, "ok1": 4})
    seen = []
    original = judge.judge

    async def recording(profile, history, query, response):
        seen.append(response)
        return await original(profile, history, query, response)

    judge.judge = recording
    stats = SelfPlayStats()
    session = asyncio.run(self_play(PROFILE, ScriptedUser(), CutResponder(), judge, max_turns=2, n_candidates=2,
                                    session_id="s", lang="en", stats=stats))
    assert [t.reference_response for t in session.turns] == ["ok1", "ok1"] and "cut" not in seen
    assert stats.truncated == 2 and session.lang == "en"
    session = asyncio.run(self_play(PROFILE, ScriptedUser(), CutResponder(), judge, max_turns=2, n_candidates=1,
                                    session_id="s", lang="en", stats=stats))
    assert session.turns == [] and session.end_reason == "truncated"


def test_unjudged_turn_ends_the_session_without_refining():
    refiner = CountingRefiner()
    session, _ = play({"r1-0": None}, refiner=refiner)
    assert session.turns == [] and session.end_reason == "unjudged" and refiner.calls == 0


@pytest.fixture()
def server():
    with ScriptedServer(handler=world) as s:
        yield s


def test_sft_cli_sessions_dataset_and_resume(server, tmp_path):
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(k, 2) for k in range(3)])
    users = write_jsonl(
        tmp_path / "users.jsonl", [{"id": "u0", "persona": "a sailor", "profile": "Ahoy, I sail."}]
    )
    config = write_config(tmp_path / "p.yaml", server.base_url, tmp_path / "cache")
    sessions = tmp_path / "sessions.jsonl"
    args = [
        f"--profiles={profiles}",
        f"--users={users}",
        f"--config={config}",
        f"--sessions_path={sessions}",
        f"--output_dir={tmp_path}",
        "--max_turns=3",
    ]
    result = subprocess.run([*SFT, *args], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "self-play: sessions 3" in result.stdout and "total" in result.stderr
    records = [SelfPlaySession.model_validate_json(line) for line in sessions.read_text().splitlines()]
    assert sorted(r.session_id for r in records) == ["p0", "p1", "p2"]
    assert all(r.user_id == "u0" for r in records)
    user_prompts = [r["messages"][0]["content"] for r in server.chat_requests if r["model"] == "user"]
    query_prompts = [p for p in user_prompts if "<message>" not in p]
    assert all("Ahoy, I sail." in p and "(20 words or fewer)" in p for p in query_prompts)
    tones = {p.split("for example: ", 1)[1].split(". Now and then", 1)[0] for p in query_prompts}
    assert len(tones) == 3 and all(len(t.split(", ")) == 10 for t in tones)  # one draw per session
    for record in records:
        assert record.end_reason in {"max_turns", "below_threshold"}
        for turn in record.turns:  # the trigger role is configured, so it selects each turn's constraints
            expected = [k - 1 for k in fake_triggered(turn.query, record.profile.constraints)]
            assert turn.triggered == expected
            in_play = [turn.follows[k] for k in expected]
            assert None not in in_play and sum(in_play) / len(in_play) >= 0.8
            assert all(turn.follows[k] is None for k in range(2) if k not in expected)
        # every query opens "question N #...", so each after the first is reworded
        assert [t.query.startswith("Reworded: question ") for t in record.turns] == [k > 0 for k in range(len(record.turns))]
    assert f"rephrased (opened like an earlier query) {len(user_prompts) - len(query_prompts)}" in result.stdout
    trigger_calls = [r for r in server.chat_requests if r["model"] == "trigger"]
    assert len(trigger_calls) == sum(len(r.turns) + (r.end_reason != "max_turns") for r in records)
    dataset = json.loads((tmp_path / "rpo_sft.json").read_text())
    assert len(dataset) == sum(bool(r.turns) for r in records)
    for example in dataset:
        roles = [m["from"] for m in example["conversations"]]
        assert roles[0] == "system" and roles[1:] == ["human", "gpt"] * ((len(roles) - 1) // 2)
    info = json.loads((tmp_path / "dataset_info.json").read_text())["rpo_sft"]
    assert info["formatting"] == "sharegpt" and info["columns"] == {"messages": "conversations"}

    before = len(server.requests)
    again = subprocess.run([*SFT, *args], check=False, capture_output=True, text=True, timeout=120)
    assert (
        again.returncode == 0
        and "skipped (already done) 3" in again.stdout
        and len(server.requests) == before
    )


def test_profile_generation_system_and_user_resume(server, tmp_path):
    replies = iter([json.dumps({"name": "Too few", "constraints": ["only one"]})])
    server.handler = lambda request: next(replies, None) or world(request)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a pirate radio host\n\na tax advisor for cats\n", encoding="utf-8")
    config = write_config(tmp_path / "p.yaml", server.base_url, tmp_path / "cache")
    out = tmp_path / "profiles.jsonl"
    result = subprocess.run(
        [*PROFILES, "system", f"--input={seeds}", f"--output={out}", f"--config={config}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "written 2" in result.stdout and "format retries 1" in result.stdout
    profiles = [SystemProfile.model_validate_json(line) for line in out.read_text().splitlines()]
    assert sorted(p.id for p in profiles) == ["seeds_1", "seeds_3"]
    for p in profiles:
        assert 6 <= len(p.constraints) <= 12 and p.skills == ["one", "two"] and p.system_prompt
        assert p.inspired_corpus in p.name and p.gen_model == "profile"
    prompt = server.chat_requests[0]["messages"][0]["content"]
    assert "between 6 and 12 rules" in prompt and "objectively checkable" in prompt

    # one more seed: a rerun only generates that one
    seeds.write_text("a pirate radio host\n\na tax advisor for cats\na retired astronaut\n", encoding="utf-8")
    before = len(server.requests)
    result = subprocess.run(
        [*PROFILES, "system", f"--input={seeds}", f"--output={out}", f"--config={config}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "written 1, skipped (already done) 2" in result.stdout and len(server.requests) == before + 1

    personas = write_jsonl(tmp_path / "personas.jsonl", [{"id": "u1", "persona": "a beekeeper"}])
    users = tmp_path / "users.jsonl"
    result = subprocess.run(
        [*PROFILES, "user", f"--input={personas}", f"--output={users}", f"--config={config}", "--shard=0/1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [user] = [UserProfile.model_validate_json(line) for line in users.read_text().splitlines()]
    assert user.id == "u1" and user.profile == "A vivid portrait of a beekeeper."


def test_bad_inputs_exit_2(server, tmp_path):
    config = write_config(tmp_path / "p.yaml", server.base_url, None)
    bad_profiles = write_jsonl(tmp_path / "profiles.jsonl", [profile_record(0), {"id": "p1", "name": "x"}])
    result = subprocess.run(
        [*SFT, f"--profiles={bad_profiles}", f"--config={config}", f"--sessions_path={tmp_path / 's.jsonl'}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "profiles.jsonl: line 2 (record p1): field constraints" in result.stderr

    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "no id here"}])
    result = subprocess.run(
        [*PROFILES, "system", f"--input={corpus}", f"--output={tmp_path / 'o.jsonl'}", f"--config={config}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "corpus.jsonl: line 1: field id" in result.stderr

    result = subprocess.run(
        [
            *REVERSE,
            f"--input={bad_profiles}",
            f"--output={tmp_path / 'r.jsonl'}",
            f"--config={config}",
            "--verify",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--verify needs session detail records" in result.stderr
    assert server.requests == []
