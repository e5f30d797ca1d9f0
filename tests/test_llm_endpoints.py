"""A role served by several endpoints, and requests logged beside their answers in the cache."""

from __future__ import annotations

import asyncio
import json

from rpo.utils.llm.client import LLMClient
from rpo.utils.local_service import free_port

from tests.scripted_server import ScriptedServer
from tests.test_llm_client import MESSAGES, chat, make_config

QUESTIONS = [[{"role": "user", "content": f"q{i}"}] for i in range(40)]


def ask_all(config, questions=QUESTIONS) -> list:
    async def go() -> list:
        async with LLMClient(config) as client:
            return await asyncio.gather(*(client.chat("response", q) for q in questions))

    return asyncio.run(go())


def test_requests_spread_over_every_endpoint_of_a_role(tmp_path):
    with ScriptedServer(delay_s=0.05) as first, ScriptedServer(delay_s=0.05) as second:
        config = make_config(None, tmp_path / "cache", concurrency=8,
                             role={"base_url": [first.base_url, second.base_url]})
        ask_all(config)
        assert len(first.requests) + len(second.requests) == 40
        assert first.max_in_flight == second.max_in_flight == 4  # fewest in flight first: 8 split 4 + 4


def test_cache_key_does_not_depend_on_which_endpoint_answered(tmp_path):
    with ScriptedServer() as first, ScriptedServer() as second:
        urls = [first.base_url, second.base_url]
        answers = ask_all(make_config(None, tmp_path / "cache", role={"base_url": urls}))
        assert first.requests and second.requests
        again = ask_all(make_config(None, tmp_path / "cache", role={"base_url": urls[::-1]}))
        assert all(r.cached for r in again) and [r.texts for r in again] == [r.texts for r in answers]
        assert len(first.requests) + len(second.requests) == 40


def test_a_dead_endpoint_in_the_list_costs_retries_not_answers():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ScriptedServer() as alive:
        config = make_config(None, role={"base_url": [dead, alive.base_url]})

        async def one_at_a_time() -> dict:
            async with LLMClient(config) as client:
                for question in QUESTIONS[:4]:
                    await client.chat("response", question)
                return client.usage()["response"]

        usage = asyncio.run(one_at_a_time())
        assert len(alive.requests) == usage["calls"] == 4
        assert 1 <= usage["retries"] <= 4  # each question tries the next endpoint after a failure


def test_log_requests_stores_the_request_beside_the_answer_and_never_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("RPO_TEST_KEY", "sk-never-in-the-cache-0123")
    with ScriptedServer() as server:
        result, _ = chat(make_config(server.base_url, tmp_path / "cache", log_requests=True), n=2, seed=3)
    [path] = (tmp_path / "cache").rglob("*.json")
    entry = json.loads(path.read_text(encoding="utf-8"))
    assert entry == {
        "texts": result.texts, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "finish_reasons": ["stop", "stop"],
        "request": {"model": "test-model", "temperature": 0.0, "max_tokens": 1024, "seed": 3,
                    "messages": MESSAGES, "n": 2},
    }
    assert "sk-never" not in path.read_text(encoding="utf-8")


def test_requests_are_not_logged_by_default(tmp_path):
    with ScriptedServer() as server:
        chat(make_config(server.base_url, tmp_path / "cache"))
    [path] = (tmp_path / "cache").rglob("*.json")
    assert set(json.loads(path.read_text(encoding="utf-8"))) == {"texts", "prompt_tokens", "completion_tokens",
                                                                "finish_reasons"}
