"""Sustained request rate of LLMClient against a loopback server with a fixed latency.

With latency L and C requests in flight, the best possible rate is C / L; the ratio achieved/ideal
shows how much the client itself (SDK, connection pool, semaphore, retries, cache, bookkeeping)
costs. The realistic load is an API-like endpoint: 64 in flight at 250 ms, ideal 256 requests/s,
and the client must sustain at least 0.9 of it (`target_ratio`; the command exits 1 below it). The
stress load, 64 in flight at 100 ms (640/s), is reported as information: it shows where the
client's CPU per request starts to bind.

The client is driven the way the stages drive it: `LLMClient.chat` with the file cache on, through
`bounded_map` with a progress bar (written to stderr). The cache is one directory per invocation
under `cache_root` (default /dev/shm, RAM, so that the numbers do not depend on a disk that other
work shares); every run sends requests of its own, so each one misses and is written.

Two rates per run, from the completion time of every request:
- `steady_ratio`: the rate between the 10th percentile completion and a whole number of waves later
  (up to the 90th percentile; see `_rates`), i.e. without the warm-up (connections opened, first
  responses) and the drain at the end: the sustained rate;
- `whole_ratio`: all requests over the wall time from the first send to the last answer, starting
  from a cold client (no connection open yet).

Two references run the same load on the same server: the SDK alone (`sdk_*`: one
`AsyncOpenAI.chat.completions.create` per request on its aiohttp client, no cache, no retries),
the floor of what the client can cost, and a bare aiohttp session (`bare_*`), the ceiling of this
machine and server. The three alternate, `repeats` times each, and the medians are reported (with
every run's value), so that background load affects them alike. The server
(`benchmarks/latency_server.py`, uvicorn) runs in its own process so that it does not share the
client's interpreter lock.

    python benchmarks/llm_throughput.py [--requests=1280] [--concurrency=64] [--latency_s=0.25]
        [--stress_latency_s=0.1] [--repeats=3] [--cache_root=/dev/shm] [--out=FILE]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import fire
import httpx2
import openai
from rpo.utils.io import write_json
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.llm.config import PipelineConfig

SERVER = Path(__file__).resolve().parent / "latency_server.py"
DEFAULT_CACHE_ROOT = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
STEADY_WINDOW = (0.1, 0.9)  # completion quantiles that bound the steady-state window


async def _drive(one: Callable[[int], Awaitable[int]], count: int, concurrency: int, offset: int,
                 desc: str | None = None) -> tuple[float, list[float], float]:
    """Send `count` distinct requests through bounded_map.

    Returns the start, every completion time, and the CPU seconds this process spent meanwhile.
    """
    done: list[float] = []
    answered = 0
    cpu = time.process_time()
    start = time.perf_counter()
    async for _, n in bounded_map(one, range(offset, offset + count), concurrency, desc=desc):
        done.append(time.perf_counter())
        answered += n
    cpu = time.process_time() - cpu
    if answered != count:
        raise RuntimeError(f"expected {count} answers, got {answered}")
    return start, done, cpu


def _rates(start: float, done: list[float], cpu: float, concurrency: int) -> dict[str, float]:
    """Whole-run and steady-state rates (requests per second) of one run.

    The answers come in waves of about `concurrency` (all sent at once, all back a latency later),
    so the steady window spans a whole number of waves: `concurrency` completions apart, the k-th
    completion and the (k + concurrency)-th sit at the same place of consecutive waves. A window
    from the first answer of one wave to the last of another would count one wave too many.
    """
    lo, end = (round(q * (len(done) - 1)) for q in STEADY_WINDOW)
    hi = lo + (end - lo) // concurrency * concurrency
    if hi == lo:
        raise ValueError(f"too few requests ({len(done)}) for a steady window at concurrency {concurrency}")
    return {
        "whole": len(done) / (done[-1] - start),
        "steady": (hi - lo) / (done[hi] - done[lo]),
        "cpu_ms": 1000 * cpu / len(done),
    }


async def _measure_client(base_url: str, requests: int, concurrency: int, offset: int,
                          cache_dir: str) -> dict[str, float]:
    """The stages' path: a cold LLMClient with the cache on, through bounded_map with a progress bar."""
    written_before = sum(1 for _ in Path(cache_dir).rglob("*.json"))
    config = PipelineConfig.from_dict({
        "default": {"base_url": base_url, "model": "bench", "api_key_env": None, "max_tokens": 16},
        "roles": {"response": {}},
        "concurrency": concurrency,
        "cache_dir": cache_dir,
    })
    async with LLMClient(config) as client:

        async def one(i: int) -> int:
            result = await client.chat("response", [{"role": "user", "content": f"request {i}"}])
            return len(result.texts)

        start, done, cpu = await _drive(one, requests, concurrency, offset, desc="llm_throughput")
        usage = client.usage()["response"]
    if usage["calls"] != requests or usage["cache_hits"]:
        raise RuntimeError(f"expected {requests} calls and no cache hits, got {usage}")
    if sum(1 for _ in Path(cache_dir).rglob("*.json")) - written_before != requests:
        raise RuntimeError("not every answer was cached")
    return {**_rates(start, done, cpu, concurrency), "retries": usage["retries"]}


async def _measure_sdk(base_url: str, requests: int, concurrency: int, offset: int) -> dict[str, float]:
    """The same load through the SDK alone: `chat.completions.create` on its aiohttp client."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with openai.AsyncOpenAI(api_key="EMPTY", base_url=base_url, max_retries=0,
                                  http_client=openai.DefaultAioHttpClient(limits=limits)) as sdk:

        async def one(i: int) -> int:
            completion = await sdk.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": f"sdk {i}"}], max_tokens=16, n=1
            )
            return len(completion.choices)

        start, done, cpu = await _drive(one, requests, concurrency, offset)
    return _rates(start, done, cpu, concurrency)


async def _measure_bare(base_url: str, requests: int, concurrency: int, offset: int) -> dict[str, float]:
    """The same load from a bare aiohttp session: the ceiling this machine and server allow."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> int:
            body = {"model": "bench", "messages": [{"role": "user", "content": f"bare {i}"}], "max_tokens": 16}
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                return len((await response.json())["choices"])

        start, done, cpu = await _drive(one, requests, concurrency, offset)
    return _rates(start, done, cpu, concurrency)


def run_benchmark(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.25, repeats: int = 3,
                  cache_root: str = DEFAULT_CACHE_ROOT) -> dict:
    """Start the fixed-latency server, drive it at `concurrency`, and return the numbers."""
    server = subprocess.Popen([sys.executable, str(SERVER), "--answer=numbered", f"--delay_s={latency_s}"],
                              stdout=subprocess.PIPE, text=True)
    runs: dict[str, list[dict[str, float]]] = {"client": [], "sdk": [], "bare_aiohttp": []}
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="llm_throughput-", dir=cache_root) as cache_dir:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[1])
            base_url = f"http://127.0.0.1:{port}/v1"
            offsets = itertools.count(step=requests)
            for _ in range(repeats):
                runs["client"].append(asyncio.run(
                    _measure_client(base_url, requests, concurrency, next(offsets), cache_dir)))
                runs["sdk"].append(asyncio.run(_measure_sdk(base_url, requests, concurrency, next(offsets))))
                runs["bare_aiohttp"].append(asyncio.run(
                    _measure_bare(base_url, requests, concurrency, next(offsets))))
    finally:
        server.terminate()
        server.wait(timeout=30)
    ideal = concurrency / latency_s

    def ratios(kind: str, rate: str) -> list[float]:
        return [round(run[rate] / ideal, 3) for run in runs[kind]]

    report: dict = {
        "requests": requests,
        "concurrency": concurrency,
        "latency_s": latency_s,
        "repeats": repeats,
        "cache_root": str(Path(cache_root).resolve()),
        "ideal_requests_per_s": round(ideal, 1),
        "steady_requests_per_s": round(statistics.median(run["steady"] for run in runs["client"]), 1),
    }
    every_run: dict[str, list[float]] = {}
    for kind, kind_runs in runs.items():
        prefix = "" if kind == "client" else f"{kind}_"
        for rate in ("steady", "whole"):
            every_run[f"{prefix}{rate}_ratio"] = ratios(kind, rate)
            report[f"{prefix}{rate}_ratio"] = statistics.median(ratios(kind, rate))
        every_run[f"{kind}_cpu_ms_per_request"] = [round(run["cpu_ms"], 3) for run in kind_runs]
        report[f"{kind}_cpu_ms_per_request"] = round(statistics.median(every_run[f"{kind}_cpu_ms_per_request"]), 3)
    report["runs"] = every_run
    report["retries"] = sum(int(run["retries"]) for run in runs["client"])
    return report


def _check_plausible(report: dict) -> None:
    """Raise when a ratio falls outside (0.2, 1.2): that is a broken measurement, not a slow one."""
    broken = {key: values for key, values in report["runs"].items()
              if key.endswith("_ratio") and not all(0.2 < value < 1.2 for value in values)}
    if broken or report["retries"]:
        raise RuntimeError(f"implausible run (a broken measurement): ratios {broken}, retries {report['retries']}")


def main(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.25, stress_latency_s: float = 0.1,
         repeats: int = 3, cache_root: str = DEFAULT_CACHE_ROOT, target_ratio: float = 0.9,
         out: str | None = None) -> None:
    """Print the realistic and the stress figures as JSON; exit 1 when the realistic one misses the target."""
    realistic = run_benchmark(requests, concurrency, latency_s, repeats, cache_root)
    stress = run_benchmark(requests, concurrency, stress_latency_s, repeats, cache_root)
    report = {"target_ratio": target_ratio, "meets_target": realistic["steady_ratio"] >= target_ratio,
              "realistic": realistic, "stress": stress}
    print(json.dumps(report))
    if out:
        write_json(out, report)
    for figures in (realistic, stress):
        _check_plausible(figures)
    if not report["meets_target"]:
        print(f"llm_throughput: sustained {realistic['steady_ratio']} of the ideal at {latency_s} s latency, "
              f"below the target {target_ratio}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    fire.Fire(main)
