"""Sustained request rate of LLMClient against a loopback server with a fixed latency.

With latency L and C requests in flight, the best possible rate is C / L; the ratio achieved/ideal
shows how much the client itself (SDK, connection pool, semaphore, bookkeeping) costs; the same
load from a bare aiohttp session (`bare_aiohttp_ratio`) shows the ceiling of the machine. The server
(`tests/scripted_server.py`, uvicorn) runs in its own process so that it does not share the
client's interpreter lock.

    python benchmarks/llm_throughput.py [--requests=1280] [--concurrency=64] [--latency_s=0.1]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import fire
from rpo.utils.concurrency import bounded_map
from rpo.utils.io import write_json
from rpo.utils.llm_client import LLMClient
from rpo.utils.pipeline_config import PipelineConfig

SERVER = Path(__file__).resolve().parent.parent / "tests" / "scripted_server.py"


async def _drive(client: LLMClient, count: int, concurrency: int, offset: int) -> float:
    """Send `count` distinct requests through bounded_map; returns the wall time in seconds."""

    async def one(i: int) -> int:
        result = await client.chat("response", [{"role": "user", "content": f"request {i}"}])
        return len(result.texts)

    start = time.perf_counter()
    answered = 0
    async for _, n in bounded_map(one, range(offset, offset + count), concurrency):
        answered += n
    elapsed = time.perf_counter() - start
    if answered != count:
        raise RuntimeError(f"expected {count} answers, got {answered}")
    return elapsed


async def _measure_bare(base_url: str, requests: int, concurrency: int) -> float:
    """The same load from a bare aiohttp session: the ceiling this machine and server allow."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> int:
            body = {"model": "bench", "messages": [{"role": "user", "content": f"bare {i}"}], "max_tokens": 16}
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                return len((await response.json())["choices"])

        async def drive(count: int, offset: int) -> float:
            start = time.perf_counter()
            async for _ in bounded_map(one, range(offset, offset + count), concurrency):
                pass
            return time.perf_counter() - start

        await drive(concurrency, 0)
        return await drive(requests, concurrency)


async def _measure(base_url: str, requests: int, concurrency: int) -> tuple[float, dict]:
    config = PipelineConfig.from_dict({
        "default": {"base_url": base_url, "model": "bench", "api_key_env": None, "max_tokens": 16},
        "roles": {"response": {}},
        "concurrency": concurrency,
        "cache_dir": None,
    })
    async with LLMClient(config) as client:
        await _drive(client, concurrency, concurrency, offset=0)  # open the connection pool first
        elapsed = await _drive(client, requests, concurrency, offset=concurrency)
        return elapsed, client.usage()["response"]


def run_benchmark(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.1) -> dict:
    """Start the fixed-latency server, drive it at `concurrency`, and return the numbers."""
    server = subprocess.Popen([sys.executable, str(SERVER), f"--delay_s={latency_s}"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        base_url = f"http://127.0.0.1:{port}/v1"
        elapsed, usage = asyncio.run(_measure(base_url, requests, concurrency))
        bare_elapsed = asyncio.run(_measure_bare(base_url, requests, concurrency))
    finally:
        server.terminate()
        server.wait(timeout=30)
    ideal = concurrency / latency_s
    achieved = requests / elapsed
    report = {
        "requests": requests,
        "concurrency": concurrency,
        "latency_s": latency_s,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(achieved, 1),
        "ideal_requests_per_s": round(ideal, 1),
        "ratio": round(achieved / ideal, 3),
        "bare_aiohttp_ratio": round(requests / bare_elapsed / ideal, 3),
        "retries": usage["retries"],
    }
    return report


def main(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.1, out: str | None = None) -> None:
    """Print the benchmark's numbers as JSON (and write them to `out` if given)."""
    report = run_benchmark(requests, concurrency, latency_s)
    print(json.dumps(report))
    if out:
        write_json(out, report)


if __name__ == "__main__":
    fire.Fire(main)
