"""A real OpenAI-compatible chat server on 127.0.0.1 whose answers each test scripts.

Usage (it runs uvicorn in a background thread on a random free port):

    from tests.scripted_server import Reply, ScriptedServer

    with ScriptedServer() as server:
        server.enqueue(Reply(status=429, retry_after=0), Reply(text="hello"))
        ...  # point a client at server.base_url ("http://127.0.0.1:PORT/v1")
        assert len(server.requests) == 2

What it answers, per `POST /v1/chat/completions`, first match wins:
1. the next `Reply` queued with `enqueue(...)`;
2. else `server.handler(request_json)`, a callable (set it or pass `handler=`) returning a
   `Reply`, a `str` (that text for every one of the `n` choices), or a `list[str]` (those choices);
3. else the default: choice texts `"reply 0"`, `"reply 1"`, ... numbered across the whole run, so
   every choice is distinct.

`Reply` fields: `text` (one text, repeated for each of the n choices) or `texts` (exact choices;
fewer than n imitates a server without `n` support); `status` (an error status such as 429 or 500
with an OpenAI-style error body); `retry_after` (seconds, sent as the `Retry-After` header);
`delay_s` (sleep before answering); `stall` (never answer: hold the request until the client hangs
up, which is what a client timeout does, whatever the timeout and however loaded the machine); `body`
(raw response body sent as is, e.g. broken JSON); `max_choices` (cap on choices returned);
`prompt_tokens` / `completion_tokens` (reported in `usage`; default: word counts);
`echo_authorization` (an error body whose message repeats the request's Authorization header, as
some proxies do). Malformed judge output is just text: `Reply(text='{"follows": [true,')`, and so
is an answer holding a lone surrogate, `Reply(text=f"a{LONE_SURROGATE}b")` (sent as the JSON escape
`\\ud800`, which is valid JSON but not encodable as UTF-8 once decoded).

Permanent failures: `ScriptedServer(fail_share=0.25)` answers about a quarter of the distinct
requests with `fail_reply` (default `Reply(status=500)`) every time they are asked, whatever the
queue or handler say, so retries cannot save them. Which ones is a deterministic function of the
request's messages: `server.fails(messages)` tells a test in advance.

Inspection: `requests` (chat requests received, in arrival order, as `Recorded(path, body,
headers)`), `all_requests` (every request, `GET /v1/models` health checks included),
`chat_requests` (just the JSON bodies of the chat requests),
`max_in_flight` (most chat requests being handled at once), `reset()` (clear log and counters).
`GET /v1/models` lists `model_name`. Run it as a process too: `python tests/scripted_server.py
--port=P` prints `PORT <n>` and serves until killed (the local-service tests start it as a stand-in
`vllm serve`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import fire
import uvicorn


@dataclass
class Reply:
    """One scripted answer; see the module docstring for each field."""

    text: str | None = None
    texts: list[str] | None = None
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0
    stall: bool = False
    body: str | bytes | None = None
    max_choices: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    echo_authorization: bool = False


LONE_SURROGATE = "\ud800"


@dataclass
class Recorded:
    """A request as received: path, parsed JSON body (None if not JSON) and headers (lower-case)."""

    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[dict[str, Any]], "Reply | str | list[str]"]


class ScriptedServer:
    """OpenAI-compatible HTTP server with scripted answers and a request log (see module docstring)."""

    def __init__(self, handler: Handler | None = None, delay_s: float = 0.0, model_name: str = "scripted",
                 port: int = 0, log_requests: bool = True, fail_share: float = 0.0,
                 fail_reply: Reply | None = None):
        if not 0.0 <= fail_share <= 1.0:
            raise ValueError(f"fail_share must be within [0, 1], got {fail_share}")
        self.handler = handler
        self.fail_share = fail_share
        self.fail_reply = fail_reply or Reply(status=500)
        self.delay_s = delay_s
        self.model_name = model_name
        self.log_requests = log_requests
        self.all_requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self._queue: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        # proto=IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections; without it, the
        # split header/body writes meet delayed ACKs and every keep-alive reply waits ~40 ms.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[Recorded]:
        """Chat requests received, in arrival order."""
        return [r for r in self.all_requests if r.path.endswith("/chat/completions")]

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    def fails(self, messages: list[dict[str, Any]]) -> bool:
        """Whether a request with these messages is in the permanently failing share."""
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.fail_share

    def enqueue(self, *replies: Reply | str) -> None:
        """Queue answers for the next chat requests, in order (a str is `Reply(text=...)`)."""
        with self._lock:
            self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    def reset(self) -> None:
        with self._lock:
            self.all_requests.clear()
            self._queue.clear()
            self.max_in_flight = self.in_flight
            self.served = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = uvicorn.Server(_uvicorn_config(self._app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        daemon=True, name=f"scripted-server-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("scripted server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI app --------------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        if self.log_requests:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            with self._lock:
                self.all_requests.append(Recorded(path, body, headers))
        if scope["method"] == "GET" and path.rstrip("/").endswith("/models"):
            models = {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "test"}]}
            await _send(send, 200, json.dumps(models).encode())
        elif scope["method"] == "POST" and path.rstrip("/").endswith("/chat/completions"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            await self._chat(body or {}, headers.get("authorization", ""), send, receive)
        else:
            await _send(send, 404, _error_body(404, f"no route {scope['method']} {path}"))

    async def _chat(self, request: dict[str, Any], authorization: str, send: Callable, receive: Callable) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.fail_share and self.fails(request.get("messages", [])):
                reply = self.fail_reply
            else:
                reply = self._next_reply(request)
            if reply.stall:  # the body is read: the next message is the client's disconnect
                while (await receive())["type"] != "http.disconnect":
                    pass
                return
            delay = reply.delay_s or self.delay_s
            if delay:
                await asyncio.sleep(delay)
            headers = [(b"retry-after", str(reply.retry_after).encode())] if reply.retry_after is not None else []
            if reply.body is not None:
                raw = reply.body.encode() if isinstance(reply.body, str) else reply.body
                await _send(send, reply.status, raw, headers)
            elif reply.status != 200:
                message = f"scripted error for Authorization: {authorization}" if reply.echo_authorization \
                    else "scripted error"
                await _send(send, reply.status, _error_body(reply.status, message), headers)
            else:
                await _send(send, 200, json.dumps(self._completion(request, reply)).encode(), headers)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.served += 1

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.handler is not None:
            answer = self.handler(request)
            if isinstance(answer, str):
                return Reply(text=answer)
            if isinstance(answer, list):
                return Reply(texts=answer)
            return answer
        n = int(request.get("n") or 1)
        return Reply(texts=[f"reply {next(self._counter)}" for _ in range(n)])

    def _completion(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        n = int(request.get("n") or 1)
        texts = reply.texts if reply.texts is not None else [reply.text or ""] * n
        if reply.max_choices is not None:
            texts = texts[: reply.max_choices]
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
        completion_words = sum(len(t.split()) for t in texts)
        prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_words
        completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else completion_words
        return {
            "id": f"chatcmpl-{next(self._counter)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model_name),
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def _uvicorn_config(app: Callable) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", interface="asgi3",
                          backlog=4096, timeout_keep_alive=30)


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "scripted", "code": status}}).encode()


async def _send(send: Callable, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def main(delay_s: float = 0.0, port: int = 0) -> None:
    """`python tests/scripted_server.py [--delay_s=S] [--port=P]`: serve default replies until killed."""
    server = ScriptedServer(delay_s=float(delay_s), port=int(port), log_requests=False)
    server._socket.listen(4096)  # before PORT is printed: a client may connect at once
    print(f"PORT {server.port}", flush=True)
    uvicorn.Server(_uvicorn_config(server._app)).run(sockets=[server._socket])


if __name__ == "__main__":
    fire.Fire(main)
