"""LLMJudge against a real OpenAI-compatible server on 127.0.0.1 (ScriptedServer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.roles.judge import LLMJudge, parse_verdicts
from rpo.utils.roles.parsing import align, parse_bool
from rpo.utils.schema import ProfileCore

from tests.scripted_server import ScriptedServer

CONSTRAINTS = [
    "Every reply must be under 50 words.",
    "When the user asks for a recipe, list the ingredients as bullet points.",
    "Never mention the price of any product.",
]
PROFILE = ProfileCore(name="Chef Bot", description="Cooks.", constraints=CONSTRAINTS)


def config_for(server: ScriptedServer, cache_dir=None) -> PipelineConfig:
    return PipelineConfig.from_dict(
        {
            "default": {
                "base_url": server.base_url,
                "model": "judge-model",
                "api_key_env": None,
                "temperature": 0,
            },
            "roles": {"judge": {}},
            "cache_dir": str(cache_dir) if cache_dir else None,
            "retry_base_s": 0,
        }
    )


def answer(follows, constraints=CONSTRAINTS, order=None) -> str:
    order = order or range(len(follows))
    return json.dumps(
        [{"constraint": constraints[i], "reason": f"because {i}", "follows": follows[i]} for i in order]
    )


@pytest.fixture()
def server():
    with ScriptedServer() as s:
        yield s


def judge_once(server, *replies, max_attempts=3, lang="en", strict=False):
    server.enqueue(*replies)

    async def go():
        async with LLMClient(config_for(server)) as client:
            judge = LLMJudge(client, lang=lang, max_attempts=max_attempts, strict=strict)
            verdicts = await judge.judge(PROFILE, [], "Give me a pancake recipe", "Flour, eggs, milk.")
            return verdicts, judge.stats

    return asyncio.run(go())


def test_good_answer_one_call_in_order(server):
    verdicts, stats = judge_once(server, answer([True, False, True]))
    assert verdicts.follows == [True, False, True]
    assert verdicts.reasons == ["because 0", "because 1", "because 2"]
    assert len(server.requests) == 1 and stats.judged == 1 and stats.unjudged == 0
    prompt = server.chat_requests[0]["messages"][0]["content"]
    for i, c in enumerate(CONSTRAINTS, 1):
        assert f"[{i}] {c}" in prompt
    assert "exactly 3 objects" in prompt and "almost never happens" in prompt  # the rare N/A rule
    assert "Give me a pancake recipe" in prompt and "Flour, eggs, milk." in prompt


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_method_judges_without_the_strict_line_unless_asked(server, lang):
    strict_line = {"en": "Be strict and literal", "zh": "严格按字面判断"}[lang]
    judge_once(server, answer([True, True, True]), lang=lang)
    judge_once(server, answer([True, True, True]), lang=lang, strict=True)
    default, strict = (request["messages"][0]["content"] for request in server.chat_requests)
    assert strict_line not in default and strict_line in strict
    assert strict.replace(next(line for line in strict.splitlines() if strict_line in line) + "\n", "") == default


def test_malformed_but_repairable_answer(server):
    text = (
        "Here is my verdict:\n```json\n[{'constraint': 'a', 'reasoning': 'x', 'evaluation_result': True},\n"
        ' {"constraint": "b", "reason": "y", "follows": "no"},\n'
        ' {"constraint": "c", "reason": "z", "follows": "true",},]\n```'
    )
    verdicts, _ = judge_once(server, text)
    assert verdicts.follows == [True, False, True] and len(server.requests) == 1


def test_wrong_count_is_retried_in_the_same_conversation(server):
    verdicts, stats = judge_once(
        server, json.dumps([{"constraint": "x", "reason": "", "follows": True}]), answer([False, False, True])
    )
    assert verdicts.follows == [False, False, True]
    assert stats.retries == 1 and stats.judged == 1
    second = server.chat_requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert "1 items" in second[2]["content"] and "exactly 3 objects" in second[2]["content"]


def test_unparseable_after_retries_is_unjudged_not_guessed(server):
    verdicts, stats = judge_once(server, "I think it is fine.", '{"follows": [true,', "[1, 2, 3]")
    assert verdicts.follows is None
    assert len(server.requests) == 3
    assert stats.unjudged == 1 and stats.judged == 0 and stats.retries == 2


def test_missing_verdict_value_is_retried(server):
    bad = json.dumps([{"constraint": c, "reason": "r", "follows": "maybe"} for c in CONSTRAINTS])
    verdicts, stats = judge_once(server, bad, answer([True, True, True]))
    assert verdicts.follows == [True, True, True] and stats.retries == 1


def test_shuffled_items_are_aligned_by_restated_constraint(server):
    verdicts, stats = judge_once(server, answer([True, False, True], order=[2, 0, 1]))
    assert verdicts.follows == [True, False, True]
    assert stats.fuzzy_aligned == 1 and len(server.requests) == 1


def test_extra_item_falls_back_to_fuzzy_match(server):
    items = json.loads(answer([False, True, False]))
    items.insert(1, {"constraint": "Overall impression", "reason": "fine", "follows": True})
    verdicts, _ = judge_once(server, json.dumps(items))
    assert verdicts.follows == [False, True, False] and len(server.requests) == 1


def test_chinese_prompt(server):
    verdicts, _ = judge_once(server, answer([True, True, False]), lang="zh")
    prompt = server.chat_requests[0]["messages"][0]["content"]
    assert "恰好包含 3 个对象" in prompt and verdicts.follows == [True, True, False]


def test_cache_makes_a_rerun_free(server, tmp_path):
    server.handler = lambda request: answer([True, False, False])

    async def go():
        async with LLMClient(config_for(server, tmp_path / "cache")) as client:
            return await LLMJudge(client, lang="en").judge(PROFILE, [], "q", "r")

    assert asyncio.run(go()).follows == [True, False, False]
    assert asyncio.run(go()).follows == [True, False, False]
    assert len(server.requests) == 1


def test_helpers():
    assert parse_bool("Yes") is True and parse_bool("否") is False and parse_bool("perhaps") is None
    assert align(["b", "a"], ["a", "b"]) == [1, 0]
    assert align([None, None], ["a", "b"]) == [0, 1]
    assert align(["a"], ["a", "b"]) is None
    follows, _, fuzzy = parse_verdicts(answer([True, True, True]), CONSTRAINTS)
    assert follows == [True, True, True] and not fuzzy
