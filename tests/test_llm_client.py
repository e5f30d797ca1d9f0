"""LLMClient against a real loopback OpenAI-compatible server: retries, cache, concurrency, top-up."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from rpo.utils.io import InputError
from rpo.utils.llm.client import ChatResult, LLMClient, LLMError
from rpo.utils.llm.config import PipelineConfig
from rpo.utils.local_service import free_port

from tests.scripted_server import Reply, ScriptedServer

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


def make_config(base_url: str, cache_dir: Path | None = None, **top: Any) -> PipelineConfig:
    role = {"base_url": base_url, "model": "test-model", "api_key_env": "RPO_TEST_KEY", "timeout_s": 5}
    role.update(top.pop("role", {}))
    return PipelineConfig.from_dict({
        "default": role,
        "roles": {"judge": {"temperature": 0.0}, "response": {}},
        "cache_dir": str(cache_dir) if cache_dir else None,
        "retry_base_s": 0.01,
        "retry_max_s": 2,
        **top,
    })


def chat(config: PipelineConfig, role: str = "judge", n: int = 1, **overrides: Any) -> tuple[ChatResult, LLMClient]:
    async def go() -> tuple[ChatResult, LLMClient]:
        async with LLMClient(config) as client:
            return await client.chat(role, MESSAGES, n=n, **overrides), client

    return asyncio.run(go())


def test_retries_429_500_and_503_then_succeeds(server):
    server.enqueue(Reply(status=429, retry_after=0), Reply(status=500), Reply(status=503), Reply(text="blue"))
    result, client = chat(make_config(server.base_url))
    assert result.texts == ["blue"] and not result.cached
    assert len(server.requests) == 4
    assert client.usage()["judge"]["retries"] == 3
    assert client.usage()["judge"]["calls"] == 1


def test_a_request_that_times_out_is_retried(server):
    """The first request is never answered; the client's timeout ends it and the retry gets the answer
    (the timeout is the only clock here: a loopback answer takes milliseconds, not the second allowed)."""
    server.enqueue(Reply(stall=True), Reply(text="blue"))
    result, client = chat(make_config(server.base_url, role={"timeout_s": 1.0}))
    assert result.texts == ["blue"]
    assert len(server.requests) == 2
    assert client.usage()["judge"]["retries"] == 1 and client.usage()["judge"]["calls"] == 1


def test_retry_after_header_is_honoured(server):
    server.enqueue(Reply(status=429, retry_after=0.6), Reply(text="ok"))
    start = time.monotonic()
    result, _ = chat(make_config(server.base_url))
    assert result.texts == ["ok"]
    assert time.monotonic() - start >= 0.6


def test_gives_up_after_max_retries_with_clear_error(server):
    server.enqueue(*[Reply(status=500)] * 3)
    with pytest.raises(LLMError, match=r"role 'judge' \(test-model\): gave up after 3 attempts: HTTP 500"):
        chat(make_config(server.base_url, max_retries=2))
    assert len(server.requests) == 3


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMError, match=r"gave up after 3 attempts: .*127\.0\.0\.1.*Connect call failed"):
        chat(make_config(url, max_retries=2))


def test_client_errors_are_not_retried(server):
    server.enqueue(Reply(status=400), Reply(text="never"))
    with pytest.raises(LLMError, match="failed: HTTP 400"):
        chat(make_config(server.base_url))
    assert len(server.requests) == 1


def test_malformed_response_body_is_retried(server):
    server.enqueue(Reply(body="{not json"), Reply(body='{"object": "error"}'), Reply(text="fine"))
    result, _ = chat(make_config(server.base_url))
    assert result.texts == ["fine"]
    assert len(server.requests) == 3


def test_malformed_json_content_is_returned_as_text(server):
    server.enqueue(Reply(text='{"follows": [true,'))
    result, _ = chat(make_config(server.base_url))
    assert result.texts == ['{"follows": [true,']


def test_cache_rerun_costs_zero_requests(server, tmp_path):
    config = make_config(server.base_url, tmp_path / "cache")
    first, _ = chat(config, n=3)
    assert len(server.requests) == 1
    again, client = chat(config, n=3)
    assert again.cached and again.texts == first.texts
    assert (again.prompt_tokens, again.completion_tokens) == (first.prompt_tokens, first.completion_tokens)
    assert len(server.requests) == 1
    assert client.usage()["judge"] == {"calls": 0, "cache_hits": 1, "retries": 0, "prompt_tokens": 0,
                                       "completion_tokens": 0, "cost": 0.0}
    chat(config, n=3, temperature=0.5)  # a different request: a new key
    chat(config, n=2)
    chat(config, n=3, seed=7)
    assert len(server.requests) == 4
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 4


def test_damaged_cache_entry_is_asked_again(server, tmp_path):
    config = make_config(server.base_url, tmp_path / "cache")
    chat(config)
    [entry] = (tmp_path / "cache").rglob("*.json")
    entry.write_text('{"texts": ["x"]')
    again, _ = chat(config)
    assert not again.cached and len(server.requests) == 2
    assert json.loads(entry.read_text())["texts"] == again.texts


def test_cache_entries_are_all_on_disk_when_the_client_closes(server, tmp_path):
    config = make_config(server.base_url, tmp_path / "cache", concurrency=8)
    questions = [[{"role": "user", "content": f"q{i}"}] for i in range(40)]

    async def ask_all() -> list[ChatResult]:
        async with LLMClient(config) as client:
            return await asyncio.gather(*(client.chat("judge", q) for q in questions))

    first = asyncio.run(ask_all())
    files = list((tmp_path / "cache").rglob("*"))
    assert len([p for p in files if p.suffix == ".json"]) == 40
    assert not [p for p in files if p.name.endswith(".tmp")]
    again = asyncio.run(ask_all())
    assert all(r.cached for r in again) and [r.texts for r in again] == [r.texts for r in first]
    assert len(server.requests) == 40


def test_cache_write_failure_is_reported(server, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    config = make_config(server.base_url, blocker)

    async def go() -> None:
        async with LLMClient(config) as client:
            await client.chat("judge", MESSAGES)

    with pytest.raises(OSError):
        asyncio.run(go())
    assert len(server.requests) == 1


def test_cache_disabled_always_asks(server):
    config = make_config(server.base_url, None)
    chat(config)
    chat(config)
    assert len(server.requests) == 2


def test_api_key_is_sent_but_never_stored(server, tmp_path, monkeypatch, capsys):
    secret = "sk-test-very-secret-0123456789"
    monkeypatch.setenv("RPO_TEST_KEY", secret)
    config = make_config(server.base_url, tmp_path / "cache")
    server.enqueue(Reply(status=500), Reply(text="ok"))
    _, client = chat(config)
    assert server.requests[-1].headers["authorization"] == f"Bearer {secret}"
    server.enqueue(*[Reply(status=500)] * 7)
    with pytest.raises(LLMError) as err:
        chat(config, n=2)
    stored = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert stored and secret not in stored
    assert secret not in str(err.value) and secret not in client.usage_table()
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err


def test_requests_carry_the_sdk_headers(server, monkeypatch):
    monkeypatch.setenv("RPO_TEST_KEY", "sk-test")
    chat(make_config(server.base_url))
    headers = server.requests[-1].headers
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert headers["content-type"] == "application/json" and headers["x-stainless-lang"] == "python"
    assert server.requests[-1].path == "/v1/chat/completions"


def test_missing_key_for_remote_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("RPO_TEST_KEY", raising=False)
    config = make_config("https://api.example.invalid/v1")
    with pytest.raises(InputError, match="environment variable RPO_TEST_KEY is not set"):
        chat(config)


def test_loopback_without_key_sends_empty(server, monkeypatch):
    monkeypatch.delenv("RPO_TEST_KEY", raising=False)
    chat(make_config(server.base_url))
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_concurrency_bound_is_respected(server):
    server.delay_s = 0.1
    config = make_config(server.base_url, concurrency=4)

    async def go() -> None:
        async with LLMClient(config) as client:
            await asyncio.gather(*(client.chat("response", [{"role": "user", "content": f"q{i}"}])
                                   for i in range(16)))

    asyncio.run(go())
    assert len(server.requests) == 16
    assert server.max_in_flight == 4


def test_tops_up_when_server_returns_fewer_choices(server):
    counter = itertools.count()
    server.handler = lambda req: Reply(texts=[f"t{next(counter)}" for _ in range(req["n"])], max_choices=2)
    result, client = chat(make_config(server.base_url), role="response", n=5)
    assert len(result.texts) == 5 and len(set(result.texts)) == 5
    assert sorted(r.body["n"] for r in server.requests) == [1, 2, 5]
    assert client.usage()["response"]["calls"] == 3


def test_server_without_n_support(server):
    server.handler = lambda req: Reply(texts=["same"] * 3, max_choices=1)
    result, _ = chat(make_config(server.base_url), role="response", n=3)
    assert result.texts == ["same"] * 3
    assert len(server.requests) == 3


def test_request_carries_role_settings_and_overrides(server):
    config = make_config(server.base_url, role={"extra_body": {"top_k": 20}, "top_p": 0.9, "max_tokens": 64})
    chat(config, role="response", n=2, max_tokens=8, stop=["\n"], model="other-model")
    body = server.requests[0].body
    assert body["model"] == "other-model" and body["n"] == 2 and body["messages"] == MESSAGES
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 8)
    assert body["top_k"] == 20 and body["stop"] == ["\n"]
    # messages travel in extra_body (no SDK transform walk): one copy, nothing else added
    assert set(body) == {"model", "messages", "n", "temperature", "top_p", "max_tokens", "top_k", "stop"}


def test_usage_counts_tokens_and_cost(server):
    config = make_config(server.base_url, role={"price_per_1k_input": 0.5, "price_per_1k_output": 2.0})
    server.enqueue(Reply(text="x", prompt_tokens=1000, completion_tokens=500))
    result, client = chat(config)
    assert (result.prompt_tokens, result.completion_tokens) == (1000, 500)
    assert client.usage()["judge"]["cost"] == pytest.approx(1.5)
    table = client.usage_table().splitlines()
    assert table[0].split() == ["role", "calls", "cache_hits", "retries", "prompt_tok", "completion_tok",
                                "cost_usd"]
    assert table[2].split() == ["judge", "1", "0", "0", "1000", "500", "1.5000"]
    assert table[-1].split()[0] == "total"


def test_unknown_role_lists_configured_roles_when_there_is_no_default(server):
    role = {"base_url": server.base_url, "model": "test-model", "api_key_env": None}
    config = PipelineConfig.from_dict({"roles": {"judge": role, "response": role}, "cache_dir": None})
    with pytest.raises(InputError) as err:
        chat(config, role="critic")
    assert str(err.value) == "role 'critic' is not configured; configured roles: judge, response"
    assert not server.requests


def test_unlisted_role_is_served_with_the_default_settings(server):
    result, client = chat(make_config(server.base_url, role={"temperature": 0.4}), role="critic")
    assert result.texts == ["reply 0"]
    body = server.requests[0].body
    assert (body["model"], body["temperature"]) == ("test-model", 0.4)
    assert client.usage()["critic"]["calls"] == 1
