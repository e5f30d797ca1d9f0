"""Wall time of the evaluation runs over the ideal, against loopback servers with a fixed latency.

SysBench: `dialogues` five-turn dialogues (two criteria a turn), the model under test and the judge
each on its own loopback server (`benchmarks/latency_server.py`, own process) answering after `latency_s`;
`run_sysbench` keeps `concurrency` requests in flight across dialogues (a dialogue's turns, and each
turn's answer and judgment, are sequential). Ideal = total calls × latency ÷ concurrency. Multi-IF:
the same for `dialogues` three-step conversations (`answer_rows`, the model only; the checkers' CPU
time is reported apart). Each run starts from an empty output directory and cache (in RAM, see
benchmarks/llm_throughput.py for why), so every call is a real request.

The client itself cannot reach the ideal on a loaded 2-core machine (its CPU per request and the two
servers' share the cores), so the same number of independent `LLMClient.chat` calls, alternating
between the two servers at the same concurrency, is timed right before each run (`client_only_ratio`):
the gap between the two ratios is what the evaluation harness adds.

    python benchmarks/eval_throughput.py [--dialogues=500] [--concurrency=64] [--latency_s=0.1] [--out=FILE]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
from rpo.eval.multi_if.data import Row, Step
from rpo.eval.multi_if.run import answer_rows
from rpo.eval.multi_if.scoring import IFExample
from rpo.eval.multi_if.summary import multi_if_metrics
from rpo.eval.sysbench.data import Dialogue
from rpo.eval.sysbench.judge import own_protocol
from rpo.eval.sysbench.run import RunSettings, run_sysbench
from rpo.utils.io import write_json
from rpo.utils.llm.client import LLMClient
from rpo.utils.llm.concurrency import bounded_map
from rpo.utils.llm.config import PipelineConfig

SERVER = Path(__file__).resolve().parent / "latency_server.py"
CACHE_ROOT = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
TURNS, STEPS, CRITERIA = 5, 3, 2


def _server(answer: str, latency_s: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(SERVER), f"--answer={answer}", f"--delay_s={latency_s}"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline().split()[1])
    return process, f"http://127.0.0.1:{port}/v1"


def _dialogues(count: int) -> list[Dialogue]:
    criteria = {str(i): {"criteria_id": i, "criteria_content": f"constraint {i}", "criteria_type": "内容约束"}
                for i in range(1, CRITERIA + 1)}
    dialogues = []
    for d in range(count):
        messages = [{"role": "system", "content": f"系统提示 {d}：你是一个乐于助人的助手。"}]
        for t in range(TURNS):
            messages += [{"role": "user", "content": f"dialogue {d} question {t}"},
                         {"role": "assistant", "content": f"reference {t}"}]
        dialogues.append(Dialogue.model_validate({
            "system_id": d, "system_prompt": messages[0]["content"], "messages": messages, "rounds_related": d % 2 == 0,
            "prompt_infos": {m["content"]: {"alignment": "align", "criteria": criteria} for m in messages[1::2]},
        }))
    return dialogues


def _rows(count: int) -> list[Row]:
    return [Row(str(r), "en", [Step(k, IFExample(str(r), f"row {r} step {k}: answer without commas",
                                                  ["punctuation:no_comma"], [{}], "multi_if"))
                               for k in range(1, STEPS + 1)]) for r in range(count)]


def _config(model_url: str, judge_url: str, concurrency: int, cache_dir: str) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "concurrency": concurrency, "cache_dir": cache_dir,
        "roles": {"response": {"model": "policy", "base_url": model_url, "temperature": 0.0},
                  "judge": {"model": "judge", "base_url": judge_url, "temperature": 0.0}},
    })


async def _client_only(config: PipelineConfig, calls: int, roles: tuple[str, ...], tag: str) -> tuple[float, float]:
    """Wall time of `calls` independent requests (distinct, so none is a cache hit) through bounded_map."""
    async def one(i: int) -> None:
        await client.chat(roles[i % len(roles)], [{"role": "user", "content": f"{tag} baseline {i}"}])

    async with LLMClient(config) as client:
        start, cpu = time.perf_counter(), time.process_time()
        async for _ in bounded_map(one, range(calls), config.concurrency):
            pass
        return time.perf_counter() - start, time.process_time() - cpu


async def _sysbench(config: PipelineConfig, dialogues: list[Dialogue], out: Path) -> tuple[float, float, dict]:
    async with LLMClient(config) as client:
        start, cpu = time.perf_counter(), time.process_time()
        outcome = await run_sysbench(client, dialogues, out, RunSettings(), own_protocol("own"), config.concurrency)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        usage = client.usage()
    assert not outcome.missing and sum(map(len, outcome.dialogues)) == len(dialogues) * TURNS
    return wall, cpu, usage


async def _multi_if(config: PipelineConfig, rows: list[Row], out: Path) -> tuple[float, float, dict]:
    async with LLMClient(config) as client:
        start, cpu = time.perf_counter(), time.process_time()
        answered = await answer_rows(client, rows, out / "responses.jsonl", config.concurrency)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        usage = client.usage()
    assert len(answered.texts) == len(rows) * STEPS and not answered.failures
    return wall, cpu, usage


def run_benchmark(dialogues: int = 500, concurrency: int = 64, latency_s: float = 0.1) -> dict:
    model, model_url = _server("echo", latency_s)
    judge, judge_url = _server("judge", latency_s)
    try:
        with tempfile.TemporaryDirectory(prefix="eval_throughput-", dir=CACHE_ROOT) as tmp:
            config = _config(model_url, judge_url, concurrency, f"{tmp}/cache")
            sys_base = asyncio.run(_client_only(config, dialogues * TURNS * 2, ("response", "judge"), "sysbench"))
            sys_run = asyncio.run(_sysbench(config, _dialogues(dialogues), Path(tmp) / "sysbench"))
            rows = _rows(dialogues)
            mif_base = asyncio.run(_client_only(config, dialogues * STEPS, ("response",), "multi_if"))
            mif_run = asyncio.run(_multi_if(config, rows, Path(tmp) / "multi_if"))
            answers = {(r.key, s.number): f"answer: {s.example.prompt}" for r in rows for s in r.steps}
            start = time.perf_counter()
            multi_if_metrics(rows, answers)
            scoring_s = time.perf_counter() - start
    finally:
        for process in (model, judge):
            process.terminate()
            process.wait(timeout=30)

    def entry(run: tuple[float, float, dict], baseline: tuple[float, float]) -> dict:
        wall, cpu, usage = run
        calls = sum(u["calls"] for u in usage.values())
        ideal = calls * latency_s / concurrency
        return {"calls": calls, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio": round(wall / ideal, 3),
                "cpu_ms_per_call": round(1000 * cpu / calls, 3), "client_only_ratio": round(baseline[0] / ideal, 3),
                "client_only_cpu_ms_per_call": round(1000 * baseline[1] / calls, 3)}

    return {"dialogues": dialogues, "concurrency": concurrency, "latency_s": latency_s,
            "sysbench": entry(sys_run, sys_base),
            "multi_if": {**entry(mif_run, mif_base), "scoring_s": round(scoring_s, 2)}}


def main(dialogues: int = 500, concurrency: int = 64, latency_s: float = 0.1, out: str | None = None) -> None:
    report = run_benchmark(dialogues, concurrency, latency_s)
    for name in ("sysbench", "multi_if"):
        r = report[name]
        print(f"{name}: {r['calls']} calls in {r['wall_s']} s, ideal {r['ideal_s']} s, ratio {r['ratio']} "
              f"({r['cpu_ms_per_call']} ms CPU a call; the bare client on the same load: {r['client_only_ratio']}, "
              f"{r['client_only_cpu_ms_per_call']} ms)")
    print(f"multi_if scoring (checkers, bootstrap): {report['multi_if']['scoring_s']} s")
    if out:
        write_json(out, report)


if __name__ == "__main__":
    fire.Fire(main)
