"""Trigger selection: the LLM selector against a scripted server, judging only what is in play, and
how self-play and sampling use a selection (once per turn, reused, unknown never guessed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.prompts.system_prompt import render_system_prompt
from rpo.utils.roles.protocols import Reply
from rpo.utils.roles.trigger import LLMTriggerSelector, judge_in_play, parse_triggered
from rpo.utils.schema import ProfileCore, SelfPlaySession, SessionDetail, Verdicts
from rpo.utils.stages.sampling import SamplingStats, sample_sessions
from rpo.utils.stages.selfplay import SelfPlayStats, self_play

from tests.scripted_server import ScriptedServer
from tests.stages_fakes import session_record, world, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = [
    "Every reply must be under 50 words.",
    "When the user asks for a recipe, list the ingredients as bullet points.",
    "Never mention the price of any product.",
]
PROFILE = ProfileCore(name="Chef Bot", description="Cooks.", constraints=CONSTRAINTS)


def select_with(server: ScriptedServer, *replies: str, lang: str = "en") -> tuple[list[int] | None, object]:
    server.enqueue(*replies)
    config = PipelineConfig.from_dict(
        {
            "default": {"base_url": server.base_url, "model": "m", "api_key_env": None, "temperature": 0},
            "roles": {"trigger": {}},
            "cache_dir": None,
            "retry_base_s": 0,
        }
    )

    async def go():
        async with LLMClient(config) as client:
            selector = LLMTriggerSelector(client, lang=lang)
            return await selector.select(PROFILE, [], "How much do pancakes cost?"), selector.stats

    return asyncio.run(go())


@pytest.fixture()
def server():
    with ScriptedServer() as s:
        yield s


def test_selector_answer_names_rules_by_number(server):
    triggered, stats = select_with(server, '{"reason": "no recipe asked", "triggered": [3, 1]}')
    assert triggered == [0, 2]
    assert stats.counts() == {
        "turns selected": 1,
        "unknown after retries": 0,
        "format retries": 0,
        "constraints in play": 2,
        "constraints offered": 3,
    }
    [request] = server.chat_requests
    prompt = request["messages"][0]["content"]
    assert request["model"] == "m" and "How much do pancakes cost?" in prompt
    system_prompt = render_system_prompt(PROFILE, lang="en")
    assert f"<system_prompt>\n{system_prompt}\n</system_prompt>" in prompt  # the whole system prompt
    assert "2. When the user asks for a recipe" in system_prompt and '"triggered"' in prompt
    assert "depends on what the reply will contain" in prompt and '"from time to time"' in prompt


@pytest.mark.parametrize(
    ("bad", "retry_line"),
    [
        ('{"triggered": [1, 4]}', "it names rule 4, but there is no rule with that number."),
        ('{"triggered": [0]}', "it names rule 0, but there is no rule with that number."),
        ('{"triggered": [1, 3, 1]}', "it names rule 1 more than once."),
        ("I think rules 1 and 3.", "it is not valid JSON of the requested shape."),
        ('{"triggered": [1.5]}', "some items lack a usable value for reason, triggered."),
        (
            '{"reason": "nothing applies", "triggered": []}',
            "it names no rule. An empty selection is not accepted: check each rule again, with points 1 and 2 in mind.",
        ),
    ],
)
def test_bad_answer_is_retried_in_the_same_conversation(server, bad, retry_line):
    triggered, stats = select_with(server, bad, '{"reason": "-", "triggered": [1, 3]}')
    assert triggered == [0, 2] and stats.retries == 1 and stats.selected == 1
    retry = server.chat_requests[1]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"] and retry[1]["content"] == bad
    assert retry[2]["content"].splitlines()[1] == retry_line


def test_empty_selections_until_the_last_attempt_leave_the_turn_unknown(server):
    empty = '{"reason": "-", "triggered": []}'
    triggered, stats = select_with(server, empty, empty, empty)
    assert triggered is None and len(server.chat_requests) == 3 and (stats.unknown, stats.retries) == (1, 2)


def test_unknown_after_retries_is_none_and_counted(server):
    triggered, stats = select_with(server, "no idea", '{"triggered": "all"}', '{"triggered": [9]}')
    assert triggered is None and len(server.chat_requests) == 3
    assert (stats.unknown, stats.retries, stats.selected, stats.offered) == (1, 2, 0, 0)


def test_lenient_shapes_and_chinese_prompt(server):
    assert select_with(server, '```json\n["2", 1]\n```')[0] == [0, 1]
    assert select_with(server, '{"reason": "无", "triggered": [2]}', lang="zh")[0] == [1]
    zh_prompt = server.chat_requests[-1]["messages"][0]["content"]
    assert "被触发规则的编号列表" in zh_prompt and "# 约束" in zh_prompt and '"时不时"' in zh_prompt
    assert parse_triggered('{"rules": [3]}', 3) == [2]


class RecordingJudge:
    """Follows exactly the constraints whose text is in `followed`; records what it was shown."""

    def __init__(self, followed=(), unjudged=()):
        self.followed = set(followed)
        self.unjudged = set(unjudged)
        self.seen: list[list[str]] = []

    async def judge(self, profile, history, query, response):
        self.seen.append(list(profile.constraints))
        if response in self.unjudged:
            return Verdicts(follows=None)
        return Verdicts(
            follows=[c in self.followed for c in profile.constraints],
            reasons=[f"on {c}" for c in profile.constraints],
        )


def test_judge_in_play_shows_only_triggered_and_maps_back():
    judge = RecordingJudge(followed={CONSTRAINTS[2]})
    verdicts = asyncio.run(judge_in_play(judge, PROFILE, [0, 2], [], "q", "r"))
    assert judge.seen == [[CONSTRAINTS[0], CONSTRAINTS[2]]]
    assert verdicts.follows == [False, None, True]
    assert verdicts.reasons == [f"on {CONSTRAINTS[0]}", "", f"on {CONSTRAINTS[2]}"]
    assert asyncio.run(judge_in_play(judge, PROFILE, [], [], "q", "r")).follows == [None, None, None]
    assert len(judge.seen) == 1  # nothing in play: no judge call
    assert asyncio.run(judge_in_play(judge, PROFILE, None, [], "q", "r")).follows == [False, False, True]
    assert judge.seen[-1] == CONSTRAINTS
    unjudged = RecordingJudge(unjudged={"r"})
    assert asyncio.run(judge_in_play(unjudged, PROFILE, [1], [], "q", "r")).follows is None


class ScriptedTrigger:
    """Answers from a list, one per call (None = unknown); records each call's query."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.queries: list[str] = []

    async def select(self, profile, history, query):
        self.queries.append(query)
        return self.answers.pop(0)


class ScriptedUser:
    async def next_query(self, profile, history, turn):
        return f"q{turn}"


class CountingResponder:
    def __init__(self):
        self.calls = 0

    async def respond(self, messages, n):
        self.calls += 1
        return [Reply(f"r{self.calls}-{i}") for i in range(n)]


class Rewriter:
    def __init__(self):
        self.seen: list[Verdicts] = []

    async def refine(self, profile, history, query, response, verdicts):
        self.seen.append(verdicts)
        return Reply(response + "+fix")


FIVE = ProfileCore(name="Bot", constraints=["a", "b", "c", "d", "e"])


def test_self_play_selects_once_per_turn_and_counts_only_triggered():
    trigger = ScriptedTrigger([0, 1], [0, 1])
    judge = RecordingJudge(followed={"a", "b"})  # 2 of 5 overall, 2 of 2 in play
    stats = SelfPlayStats()
    session = asyncio.run(
        self_play(
            FIVE,
            ScriptedUser(),
            CountingResponder(),
            judge,
            max_turns=2,
            n_candidates=3,
            refiner=Rewriter(),
            session_id="s",
            lang="en",
            stats=stats,
            trigger=trigger,
        )
    )
    assert trigger.queries == ["q0", "q1"]  # once per turn, shared by the 3 candidates
    assert judge.seen == [["a", "b"]] * 6
    assert session.end_reason == "max_turns" and [t.triggered for t in session.turns] == [[0, 1], [0, 1]]
    assert session.turns[0].follows == [True, True, None, None, None] and stats.refinements == 0
    record = json.loads(session.model_dump_json(exclude_unset=True))
    assert list(record["turns"][0]) == ["query", "reference_response", "triggered", "follows", "refinements"]


def test_self_play_refines_on_triggered_verdicts_and_stops_on_unknown():
    trigger = ScriptedTrigger([0, 2], None)
    judge = RecordingJudge(followed={"a"})  # 1 of 2 in play: below 80%, refine
    rewriter = Rewriter()
    responder = CountingResponder()
    stats = SelfPlayStats()
    session = asyncio.run(
        self_play(
            FIVE,
            ScriptedUser(),
            responder,
            judge,
            max_turns=3,
            refiner=rewriter,
            max_refines=2,
            session_id="s",
            lang="en",
            stats=stats,
            trigger=trigger,
        )
    )
    assert [v.follows for v in rewriter.seen] == [[True, None, False, None, None]] * 2
    assert trigger.queries == ["q0"] and session.end_reason == "below_threshold"
    session = asyncio.run(
        self_play(
            FIVE,
            ScriptedUser(),
            responder,
            RecordingJudge(followed=set("abcde")),
            max_turns=3,
            session_id="s",
            lang="en",
            stats=stats,
            trigger=ScriptedTrigger([4], None),
        )
    )
    assert session.end_reason == "trigger_unknown" and [t.triggered for t in session.turns] == [[4]]
    assert responder.calls == 2  # the unknown turn asked the responder nothing
    assert stats.trigger_unknown == 1 and "turns with triggers unknown 1" in stats.summary()


class FixedReverser:
    async def reverse(self, profile):
        return [f"not {c}" for c in profile.constraints]


def sample(sessions, trigger, judge, tmp_path, name="detail.jsonl"):
    out = tmp_path / name
    stats = asyncio.run(
        sample_sessions(
            sessions,
            CountingResponder(),
            judge,
            FixedReverser(),
            n=3,
            concurrency=1,
            output_path=out,
            lang="en",
            desc=None,
            trigger=trigger,
        )
    )
    return stats, [json.loads(line) for line in out.read_text().splitlines()]


def test_sampling_selects_once_per_turn_for_all_samples(tmp_path):
    session = SelfPlaySession.model_validate(session_record(0))
    trigger = ScriptedTrigger([0, 2], [1])
    judge = RecordingJudge(followed={session.profile.constraints[0]})
    stats, [record] = sample([session], trigger, judge, tmp_path)
    assert sorted(trigger.queries) == ["q0.0", "q0.1"] and len(judge.seen) == 6
    detail = SessionDetail.model_validate(record)
    by_query = {t.query: t for t in detail.turns}
    assert by_query["q0.0"].triggered == [0, 2] and by_query["q0.1"].triggered == [1]
    assert {tuple(s.follows) for s in by_query["q0.0"].samples} == {(True, None, False)}
    assert {tuple(s.follows) for s in by_query["q0.1"].samples} == {(None, False, None)}
    assert stats.triggers_reused == 0 and stats.samples == 6


def test_sampling_reuses_self_play_selection_and_skips_unknown_turns(tmp_path):
    raw = session_record(0)
    raw["turns"][0]["triggered"] = [2]
    trigger = ScriptedTrigger(None)  # only the turn without a recorded selection asks, and gets "unknown"
    stats, [record] = sample([SelfPlaySession.model_validate(raw)], trigger, RecordingJudge(), tmp_path)
    assert trigger.queries == ["q0.1"]
    assert stats.triggers_reused == 1 and stats.trigger_unknown == 1 and stats.samples == 3
    first, second = record["turns"]
    assert first["triggered"] == [2] and [s["follows"] for s in first["samples"]] == [[None, None, False]] * 3
    assert second == {"query": "q0.1", "reference_response": "ref0.1", "samples": [], "trigger_unknown": True}
    SessionDetail.model_validate(record)


def test_without_a_selector_every_constraint_is_judged_as_before(tmp_path):
    raw = session_record(0)
    raw["turns"][0]["triggered"] = [2]  # a recorded selection is ignored when selection is off
    judge = RecordingJudge(followed={raw["profile"]["constraints"][1]})
    stats, [record] = sample([SelfPlaySession.model_validate(raw)], None, judge, tmp_path)
    assert all("triggered" not in turn for turn in record["turns"])
    assert [s["follows"] for t in record["turns"] for s in t["samples"]] == [[False, True, False]] * 6
    assert judge.seen == [raw["profile"]["constraints"]] * 6 and stats == SamplingStats(
        sessions=1, written=1, turns=2, samples=6
    )


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "src" / "dsc" / script), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def test_clis_use_trigger_role_then_judge_endpoint_and_no_trigger_turns_it_off(tmp_path):
    with ScriptedServer(handler=world) as server:
        sessions = write_jsonl(tmp_path / "sessions.jsonl", [session_record(k) for k in range(2)])
        config = write_config(tmp_path / "p.yaml", server.base_url, None)
        base = [f"--config={config}", f"--sessions_path={sessions}", f"--output_dir={tmp_path}", "--n=2"]
        result = run_cli("dpo_data_construction.py", *base, f"--detail_path={tmp_path / 'a.jsonl'}")
        assert result.returncode == 0, result.stderr
        assert "trigger: turns selected 4, unknown after retries 0" in result.stdout
        assert sum(r["model"] == "trigger" for r in server.chat_requests) == 4
        records = [SessionDetail.model_validate_json(line) for line in (tmp_path / "a.jsonl").open()]
        assert all(turn.triggered is not None for r in records for turn in r.turns)

        server.reset()
        no_role = tmp_path / "judge_only.yaml"
        raw = yaml.safe_load(config.read_text())
        del raw["roles"]["trigger"]
        no_role.write_text(yaml.safe_dump(raw))
        result = run_cli(
            "dpo_data_construction.py",
            *base[1:],
            f"--config={no_role}",
            f"--detail_path={tmp_path / 'b.jsonl'}",
        )
        assert result.returncode == 0, result.stderr
        judge_prompts = [r["messages"][0]["content"] for r in server.chat_requests if r["model"] == "judge"]
        assert sum("<response>" not in p for p in judge_prompts) == 4  # trigger prompts on judge's endpoint

        server.reset()
        result = run_cli(
            "dpo_data_construction.py", *base, "--no-trigger", f"--detail_path={tmp_path / 'c.jsonl'}"
        )
        assert result.returncode == 0, result.stderr
        assert "trigger:" not in result.stdout
        assert not any(r["model"] == "trigger" for r in server.chat_requests)
        assert all(
            "triggered" not in t for line in (tmp_path / "c.jsonl").open() for t in json.loads(line)["turns"]
        )
