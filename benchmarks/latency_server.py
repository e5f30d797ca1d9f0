"""A loopback OpenAI-compatible chat server that answers every request after a fixed latency.

The throughput benchmarks run it in its own process, so that its work does not share the measured
client's interpreter lock:

    python benchmarks/latency_server.py --answer=numbered|echo|judge [--delay_s=0.25]

It prints `PORT <n>` once it listens, then serves `POST /v1/chat/completions` until killed:
- `numbered`: "answer 0", "answer 1", ... (one per requested choice, distinct across the run);
- `echo`: "answer: <the last user message>" (a model under test);
- `judge`: a SysBench judge verdict that finds every criterion of the prompt's `<criteria>` block
  followed ("ok" for a prompt without one).
Plain ASGI on uvicorn, with TCP_NODELAY on accepted connections: the server should cost the
benchmark as little as possible, so that the numbers describe the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import fire
import uvicorn

CRITERIA = re.compile(r"<criteria>\n(.*?)</criteria>", re.DOTALL)
_counter = itertools.count()


def last_user_message(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


def judge_verdict(request: dict[str, Any]) -> str:
    block = CRITERIA.search(request["messages"][0]["content"])
    if block is None:
        return "ok"
    ids = [line.split(".", 1)[0] for line in block.group(1).splitlines() if line.strip()]
    return json.dumps({"评判理由": "all followed", "评判结果": dict.fromkeys(ids, "是")}, ensure_ascii=False)


ANSWERS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "numbered": lambda request: None,
    "echo": lambda request: f"answer: {last_user_message(request)}",
    "judge": judge_verdict,
}


def completion(request: dict[str, Any], answer: str | None) -> dict[str, Any]:
    choices = int(request.get("n") or 1)
    texts = [answer if answer is not None else f"answer {next(_counter)}" for _ in range(choices)]
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    completion_tokens = sum(len(text.split()) for text in texts)
    return {
        "id": f"chatcmpl-{next(_counter)}", "object": "chat.completion", "created": int(time.time()),
        "model": request.get("model", "bench"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    for i, text in enumerate(texts)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def app(answer: Callable[[dict[str, Any]], str | None], delay_s: float) -> Callable:
    async def serve(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/chat/completions"):
            await asyncio.sleep(delay_s)
            request = json.loads(raw)
            status, body = 200, json.dumps(completion(request, answer(request))).encode()
        else:
            status, body = 404, json.dumps({"error": {"message": f"no route {scope['path']}"}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return serve


def main(answer: str = "numbered", delay_s: float = 0.0, port: int = 0) -> None:
    """Serve until killed; `PORT <n>` is printed once the socket listens."""
    if answer not in ANSWERS:
        raise SystemExit(f"error: --answer: expected one of {', '.join(ANSWERS)}, got {answer!r}")
    # proto=IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections (no delayed-ACK stalls)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(4096)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app(ANSWERS[answer], float(delay_s)), log_level="warning", access_log=False,
                            lifespan="off", interface="asgi3", backlog=4096, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    fire.Fire(main)
