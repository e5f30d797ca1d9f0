"""LLMReverser and reversal verification against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest
from rpo.utils.llm.client import LLMClient
from rpo.utils.roles.reverser import LLMReversalVerifier, LLMReverser, verify_reversals
from rpo.utils.schema import ProfileCore, SessionDetail

from tests.scripted_server import ScriptedServer
from tests.test_judge_llm import config_for

CONSTRAINTS = ["Reply in at most 30 words.", "Mention Paris in every reply.", "The audience is teenagers."]
REVERSED = ["Reply in more than 30 words.", "Never mention Paris.", None]
PROFILE = ProfileCore(name="Guide", constraints=CONSTRAINTS)


@pytest.fixture()
def server():
    with ScriptedServer() as s:
        yield s


def reverse_with(server, *replies, max_attempts=3):
    server.enqueue(*replies)

    async def go():
        async with LLMClient(config_for(server)) as client:
            reverser = LLMReverser(client, role="judge", lang="en", max_attempts=max_attempts)
            return await reverser.reverse(PROFILE), reverser.stats

    return asyncio.run(go())


def items(order, reversed_=REVERSED, with_index=True):
    out = []
    for i in order:
        item = {"constraint": CONSTRAINTS[i], "reversed": reversed_[i]}
        if with_index:
            item = {"index": i + 1, **item}
        out.append(item)
    return json.dumps(out)


def test_maps_back_by_index_not_position(server):
    reversals, stats = reverse_with(server, items([2, 0, 1]))
    assert reversals == REVERSED
    assert len(server.requests) == 1 and stats.not_reversible == 1
    prompt = server.chat_requests[0]["messages"][0]["content"]
    assert "[1] Reply in at most 30 words." in prompt and "null" in prompt


def test_null_and_placeholder_mean_not_reversible(server):
    answer = json.loads(items([0, 1, 2]))
    answer[1]["reversed"] = "N/A"
    reversals, _ = reverse_with(server, json.dumps(answer))
    assert reversals == [REVERSED[0], None, None]


def test_without_index_uses_position_then_fuzzy(server):
    reversals, _ = reverse_with(server, items([0, 1, 2], with_index=False))
    assert reversals == REVERSED
    reversals, _ = reverse_with(server, items([1, 2, 0], with_index=False))
    assert reversals == REVERSED


def test_count_mismatch_is_retried(server):
    reversals, stats = reverse_with(server, items([0, 1]), items([0, 1, 2]))
    assert reversals == REVERSED and stats.retries == 1 and len(server.requests) == 2
    retry = server.chat_requests[1]["messages"][-1]["content"]
    assert "2 items" in retry and "exactly 3 objects" in retry


def test_gives_up_with_all_none_after_retries(server):
    reversals, stats = reverse_with(server, "no idea", items([0]), "[]", max_attempts=3)
    assert reversals == [None, None, None]
    assert stats.failed_profiles == 1 and len(server.requests) == 3


class MentionVerifier:
    """A tiny rule `ReversalVerifier`: a reversal 'Mention X...' / 'Never mention X.' checked on the text."""

    async def verify(self, profile, query, response, indices, reversals):
        follows = []
        for c in reversals:
            word = c.rstrip(".").split()[-1] if c.startswith("Never") else c.split()[1]
            present = word.lower() in response.lower()
            follows.append(not present if c.startswith("Never") else present)
        return follows


def detail(reversed_constraints):
    return SessionDetail.model_validate(
        {
            "session_id": "s1",
            "profile": {
                "name": "Guide",
                "constraints": ["Mention Paris in every reply.", "Mention Rome in every reply."],
            },
            "reversed_constraints": reversed_constraints,
            "turns": [
                {
                    "query": "q",
                    "reference_response": "r",
                    "samples": [
                        {"response": "Rome is lovely", "follows": [False, True]},
                        {"response": "Nothing here", "follows": [False, False]},
                        {"response": "Paris and Rome", "follows": [True, True]},
                        {"response": "unjudged", "follows": None},
                    ],
                }
            ],
        }
    )


def test_verify_flags_a_reversal_that_failing_samples_do_not_satisfy():
    good_and_bad = detail(["Never mention Paris.", "Mention Milan in every reply."])
    checks = asyncio.run(verify_reversals(good_and_bad, MentionVerifier()))
    assert [c.ok for c in checks] == [True, False]
    assert checks[0].checked == 2 and checks[0].satisfied == 2
    assert checks[1].checked == 1 and checks[1].satisfied == 0
    unreversed = asyncio.run(verify_reversals(detail([None, None]), MentionVerifier()))
    assert [c.ok for c in unreversed] == [None, None]


def test_llm_verifier_one_call_per_sample(server):
    server.handler = lambda request: json.dumps(
        [{"constraint": "x", "reason": "", "follows": True}]
        * request["messages"][0]["content"].count("(original:")
    )

    async def go():
        async with LLMClient(config_for(server)) as client:
            verifier = LLMReversalVerifier(client, role="judge", lang="en")
            return await verify_reversals(detail(["Never mention Paris.", "Never mention Rome."]), verifier)

    checks = asyncio.run(go())
    assert [c.ok for c in checks] == [True, True]
    assert len(server.requests) == 2  # the two samples that fail something
    prompt = server.chat_requests[1]["messages"][0]["content"]
    assert "[1] Never mention Paris." in prompt and "(original: Mention Paris in every reply.)" in prompt
