"""Sustained request rate of LLMClient against a loopback server with a fixed latency.

With latency L and C requests in flight, the best possible rate is C / L; the ratio achieved/ideal
shows how much the client itself (SDK, connection pool, semaphore, cache, bookkeeping) costs. The
client is driven the way the stages drive it: `LLMClient.chat` with the file cache on, through
`bounded_map` with a progress bar (written to stderr). The cache is one directory per invocation
under `cache_root`; every run sends requests of its own, so each one misses and is written.

`cache_root` defaults to /dev/shm (RAM), where creating an entry costs ~17 us, close to the ~25 us
it costs on this machine's ext4 in a directory that only grows, as the stages' `cache/llm` does. On
that ext4 (mounted with `discard`), creating files where many were deleted in the last minutes
costs up to ~1 ms of kernel time each, and a benchmark on disk deletes thousands of entries per
invocation, so it would measure its own churn; `--cache_root=cache` measures on disk anyway. (The
client writes entries from a background thread: that cost takes CPU from the client and the
server, both on this machine, but does not stall the event loop.)

Two rates per run, from the completion time of every request:
- `steady_ratio`: the rate between the 10th percentile completion and a whole number of waves later
  (up to the 90th percentile; see `_rates`), i.e. without the warm-up (connections opened, first
  responses) and the drain at the end: the sustained rate;
- `whole_ratio`: all requests over the wall time from the first send to the last answer, starting
  from a cold client (no connection open yet).

The same load from a bare aiohttp session (`bare_*`, no SDK, no cache) shows the ceiling of this
machine and server. Client and bare runs alternate, `repeats` times each, and the medians are
reported (with every run's value), so that background load affects both alike. The server
(`tests/scripted_server.py`, uvicorn) runs in its own process so that it does not share the
client's interpreter lock. Both sides use uvloop when it is installed (see `rpo.utils.llm.concurrency`).

    python benchmarks/llm_throughput.py [--requests=1280] [--concurrency=64] [--latency_s=0.1] [--repeats=3]
        [--cache_root=/dev/shm] [--out=FILE]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import fire
from rpo.utils.io import write_json
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map, run_async
from rpo.utils.llm.config import PipelineConfig

SERVER = Path(__file__).resolve().parent.parent / "tests" / "scripted_server.py"
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


async def _measure_bare(base_url: str, requests: int, concurrency: int, offset: int) -> dict[str, float]:
    """The same load from a bare aiohttp session: the ceiling this machine and server allow."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(i: int) -> int:
            body = {"model": "bench", "messages": [{"role": "user", "content": f"bare {i}"}], "max_tokens": 16}
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                return len((await response.json())["choices"])

        start, done, cpu = await _drive(one, requests, concurrency, offset)
    return _rates(start, done, cpu, concurrency)


def run_benchmark(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.1, repeats: int = 3,
                  cache_root: str = DEFAULT_CACHE_ROOT) -> dict:
    """Start the fixed-latency server, drive it at `concurrency`, and return the numbers."""
    server = subprocess.Popen([sys.executable, str(SERVER), f"--delay_s={latency_s}"],
                              stdout=subprocess.PIPE, text=True)
    client_runs: list[dict[str, float]] = []
    bare_runs: list[dict[str, float]] = []
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="llm_throughput-", dir=cache_root) as cache_dir:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[1])
            base_url = f"http://127.0.0.1:{port}/v1"
            for r in range(repeats):
                client = _measure_client(base_url, requests, concurrency, 2 * r * requests, cache_dir)
                client_runs.append(run_async(client))
                bare_runs.append(run_async(_measure_bare(base_url, requests, concurrency, (2 * r + 1) * requests)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    ideal = concurrency / latency_s

    def ratios(runs: list[dict[str, float]], kind: str) -> list[float]:
        return [round(run[kind] / ideal, 3) for run in runs]

    report = {
        "requests": requests,
        "concurrency": concurrency,
        "latency_s": latency_s,
        "repeats": repeats,
        "event_loop": _loop_name(),
        "cache_root": str(Path(cache_root).resolve()),
        "ideal_requests_per_s": round(ideal, 1),
        "steady_requests_per_s": round(statistics.median(run["steady"] for run in client_runs), 1),
        "steady_ratio": statistics.median(ratios(client_runs, "steady")),
        "whole_ratio": statistics.median(ratios(client_runs, "whole")),
        "bare_aiohttp_steady_ratio": statistics.median(ratios(bare_runs, "steady")),
        "bare_aiohttp_whole_ratio": statistics.median(ratios(bare_runs, "whole")),
        "client_cpu_ms_per_request": round(statistics.median(run["cpu_ms"] for run in client_runs), 3),
        "bare_aiohttp_cpu_ms_per_request": round(statistics.median(run["cpu_ms"] for run in bare_runs), 3),
        "runs": {
            "steady_ratio": ratios(client_runs, "steady"),
            "whole_ratio": ratios(client_runs, "whole"),
            "bare_aiohttp_steady_ratio": ratios(bare_runs, "steady"),
            "bare_aiohttp_whole_ratio": ratios(bare_runs, "whole"),
            "client_cpu_ms_per_request": [round(run["cpu_ms"], 3) for run in client_runs],
            "bare_aiohttp_cpu_ms_per_request": [round(run["cpu_ms"], 3) for run in bare_runs],
        },
        "retries": sum(int(run["retries"]) for run in client_runs),
    }
    return report


def _loop_name() -> str:
    async def name() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    return run_async(name())


def main(requests: int = 1280, concurrency: int = 64, latency_s: float = 0.1, repeats: int = 3,
         cache_root: str = DEFAULT_CACHE_ROOT, out: str | None = None) -> None:
    """Print the benchmark's numbers as JSON (and write them to `out` if given)."""
    report = run_benchmark(requests, concurrency, latency_s, repeats, cache_root)
    print(json.dumps(report))
    if out:
        write_json(out, report)


if __name__ == "__main__":
    fire.Fire(main)
