"""LLMClient failing loudly and safely: keys scrubbed, unencodable answers cached, one-line errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import traceback

import httpx2
import openai
import pytest
from rpo.utils.io import InputError
from rpo.utils.llm.client import ChatResult, LLMClient, LLMError, _describe, _retryable
from rpo.utils.llm.config import PipelineConfig

from tests.scripted_server import LONE_SURROGATE, Reply, ScriptedServer
from tests.test_llm_client import MESSAGES, chat, make_config

SECRET = "sk-test-echoed-0123456789abcdef"


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


def test_key_echoed_in_an_error_body_is_scrubbed_from_the_error(server, monkeypatch, capsys, caplog):
    monkeypatch.setenv("RPO_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.enqueue(Reply(status=401, echo_authorization=True))
    with pytest.raises(LLMError) as err:
        chat(make_config(server.base_url))
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert str(err.value) == (
        f"role 'judge' (test-model): failed: HTTP 401 from {server.base_url}/chat/completions: "
        "scripted error for Authorization: Bearer ***"
    )
    printed = "".join(traceback.format_exception(err.value))
    assert "Bearer ***" in printed and SECRET not in printed
    assert err.value.__cause__ is None and err.value.__context__ is None
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


def test_key_echoed_in_an_error_body_is_scrubbed_from_the_retry_log(server, monkeypatch, caplog):
    monkeypatch.setenv("RPO_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.enqueue(Reply(status=500, echo_authorization=True), Reply(text="ok"))
    result, client = chat(make_config(server.base_url))
    assert result.texts == ["ok"] and client.usage()["judge"]["retries"] == 1
    [retry] = [r.getMessage() for r in caplog.records if r.name == "rpo.utils.llm.client"]
    assert retry.startswith(
        f"role 'judge' (test-model): attempt 1 failed (HTTP 500 from {server.base_url}/chat/completions: "
        "scripted error for Authorization: Bearer ***); retrying in "
    )
    assert SECRET not in caplog.text


def test_answer_with_a_lone_surrogate_is_returned_safely_and_cached(server, tmp_path):
    config = make_config(server.base_url, tmp_path / "cache")
    server.enqueue(Reply(text=f"a{LONE_SURROGATE}b"))
    first, _ = chat(config, n=2)
    assert first.texts == ["a\ufffdb", "a\ufffdb"]
    assert all(text.encode("utf-8") for text in first.texts)
    [entry] = (tmp_path / "cache").rglob("*.json")
    entry.read_bytes().decode("utf-8")  # valid UTF-8 on disk
    again, _ = chat(config, n=2)
    assert again.cached and again.texts == first.texts
    assert len(server.requests) == 1


def test_request_failing_for_good_is_one_line_naming_role_endpoint_and_cause(server):
    server.enqueue(Reply(status=503, body='{"error": {"message": "overloaded\\n  try later"}}'))
    server.enqueue(*[Reply(status=503, body='{"error": {"message": "overloaded\\n  try later"}}')] * 2)
    with pytest.raises(LLMError) as err:
        chat(make_config(server.base_url, max_retries=2))
    assert str(err.value) == (
        f"role 'judge' (test-model): gave up after 3 attempts: HTTP 503 from {server.base_url}/chat/completions: "
        "overloaded try later"
    )


def test_a_permanently_failing_share_fails_alone_and_the_rest_is_answered():
    with ScriptedServer(fail_share=0.3) as server:
        questions = [[{"role": "user", "content": f"question {i}"}] for i in range(20)]
        failing = [server.fails(q) for q in questions]
        assert 0 < sum(failing) < len(questions)
        config = make_config(server.base_url, max_retries=1)

        async def ask_all() -> list[ChatResult | BaseException]:
            async with LLMClient(config) as client:
                return await asyncio.gather(*(client.chat("judge", q) for q in questions), return_exceptions=True)

        results = asyncio.run(ask_all())
        for fails, result in zip(failing, results):
            if fails:
                assert isinstance(result, LLMError)
                assert str(result) == (
                    f"role 'judge' (test-model): gave up after 2 attempts: HTTP 500 from "
                    f"{server.base_url}/chat/completions: scripted error"
                )
            else:
                assert isinstance(result, ChatResult) and result.texts[0].startswith("reply ")
        assert len(server.requests) == 2 * sum(failing) + (len(questions) - sum(failing))


def test_connection_failure_names_the_endpoint_and_cause_on_one_line():
    from rpo.utils.local_service import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMError) as err:
        chat(make_config(url, max_retries=0))
    message = str(err.value)
    assert message.startswith(f"role 'judge' (test-model): gave up after 1 attempt: timed out: {url}/chat/completions (")
    assert "Connect call failed" in message and "\n" not in message


def test_key_is_read_from_the_environment_at_each_request(server, monkeypatch):
    config = make_config(server.base_url)

    async def go() -> None:
        async with LLMClient(config) as client:
            monkeypatch.setenv("RPO_TEST_KEY", "sk-first")
            await client.chat("judge", MESSAGES)
            monkeypatch.setenv("RPO_TEST_KEY", "sk-second")
            await client.chat("judge", MESSAGES, n=2)

    asyncio.run(go())
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer sk-first", "Bearer sk-second"]


LONG_SECRET = "sk-proj-" + "".join(chr(ord("a") + (i * 7) % 26) for i in range(150))  # 158 characters


def _key_fragments(text: str, secret: str, size: int = 8) -> list[str]:
    """Every run of `size` characters of `secret` that appears in `text`."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1) if secret[i:i + size] in text]


@pytest.mark.parametrize("lead", [150, 200, 250])
def test_long_key_cut_by_the_message_limit_is_masked(server, monkeypatch, lead):
    """A server message is cut at 300 characters: wherever the key would fall across the cut, none of
    it is left (the message is scrubbed first)."""
    monkeypatch.setenv("RPO_TEST_KEY", LONG_SECRET)
    body = json.dumps({"error": {"message": "x" * lead + f" key={LONG_SECRET} rejected"}})
    server.enqueue(Reply(status=401, body=body))
    with pytest.raises(LLMError) as err:
        chat(make_config(server.base_url))
    message = str(err.value)
    assert message.endswith(" key=*** rejected")
    assert _key_fragments(message, LONG_SECRET) == []


def test_key_cut_short_by_the_server_is_masked(server, monkeypatch):
    monkeypatch.setenv("RPO_TEST_KEY", LONG_SECRET)
    body = json.dumps({"error": {"message": f"unknown key {LONG_SECRET[:69]}... (truncated)"}})
    server.enqueue(Reply(status=401, body=body))
    with pytest.raises(LLMError) as err:
        chat(make_config(server.base_url))
    assert str(err.value).endswith(": unknown key ***... (truncated)")


def test_a_missing_key_is_named_with_its_role_before_any_call(server, monkeypatch):
    """Every role the run names is checked when the client is made: nothing is sent."""
    monkeypatch.delenv("RPO_TEST_KEY", raising=False)
    config = PipelineConfig.from_dict({
        "default": {"base_url": server.base_url, "model": "m", "api_key_env": None},
        "roles": {"response": {}, "judge": {"base_url": "https://judge.example.invalid/v1", "api_key_env": "RPO_TEST_KEY"}},
    })
    with pytest.raises(InputError) as err:
        LLMClient(config, roles=["response", "judge"])
    assert str(err.value) == (
        "role 'judge': environment variable RPO_TEST_KEY is not set (needed for "
        "https://judge.example.invalid/v1); export it, or point the role at a local server"
    )
    assert server.requests == []


def test_a_host_that_does_not_resolve_is_refused_at_once(monkeypatch):
    monkeypatch.setenv("RPO_TEST_KEY", "sk-anything")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    config = make_config("https://llm.example.invalid/v1", max_retries=60, retry_base_s=1.0)
    started = time.monotonic()
    with pytest.raises(InputError) as err:
        chat(config)
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert message.startswith("role 'judge': the host of https://llm.example.invalid/v1 does not resolve (")
    assert message.endswith("); check base_url") and "\n" not in message


def test_a_name_resolution_failure_during_a_request_is_not_retried():
    request = httpx2.Request("POST", "https://llm.example.invalid/v1/chat/completions")
    err = openai.APIConnectionError(request=request)
    err.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert not _retryable(err)
    assert _describe(err, lambda text: text).startswith(
        "host name does not resolve: https://llm.example.invalid/v1/chat/completions (gaierror: ")


def test_behind_a_proxy_the_host_is_left_to_the_proxy(monkeypatch):
    """Through a proxy, this machine need not resolve the name: nothing is refused up front."""
    monkeypatch.setenv("RPO_TEST_KEY", "sk-anything")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    LLMClient(make_config("https://llm.example.invalid/v1"), roles=["judge"])  # no InputError
