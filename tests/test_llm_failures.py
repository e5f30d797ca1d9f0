"""LLMClient failing loudly and safely: keys scrubbed, unencodable answers cached, one-line errors."""

from __future__ import annotations

import asyncio
import logging
import traceback

import pytest
from rpo.utils.llm.client import ChatResult, LLMClient, LLMError

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
