"""SysBank load, search and web-server speed on a release-sized file (32k prompts, mixed languages).

    python benchmarks/sysbank_bench.py [--records 32000] [--seed 0] [--clients 200] [--rounds 3]

Generates a release-format `.jsonl` in a temp dir (both key languages, some flat-only records and
the release's misspellings), then times `Bank.load` (target <= 3 s), a set of substring and regex
searches (target <= 200 ms per query) and a backtracking regex (stopped at its deadline). Then it
starts `browse.py serve` on that file (loopback only) and sends `--clients` requests at once, each on
its own connection, `--rounds` times, reporting whether all were answered and their latencies; and
it times small requests sent while a backtracking search runs. It prints the numbers.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import aiohttp
import fire
from rpo.utils.io import InputError

from sysbank.bank import REGEX_TIMEOUT_S, Bank, Filters
from sysbank.loader import SAMPLE_PATH

BROWSE = Path(__file__).resolve().parent.parent / "sysbank" / "browse.py"
BACKTRACKING = r"(\w|\w)*#"

LOAD_TARGET_S = 3.0
QUERY_TARGET_MS = 200.0

_EN_TOPICS = ["travel", "cooking", "chess", "poetry", "finance", "fitness", "history", "music", "gardening", "law"]
_ZH_TOPICS = ["旅行", "烹饪", "象棋", "诗词", "理财", "健身", "历史", "音乐", "园艺", "法律"]
_EN_RULES = [
    "Every response must mention {t} at least twice.",
    "Responses must not exceed {n} words.",
    "When the user asks about {t}, answer as a numbered list.",
    "Never use emojis when discussing {t}.",
    "End each response with the phrase 'Stay curious about {t}.'",
    "If the user is rude, politely decline and steer back to {t}.",
    "Refer to yourself as the {t} guide.",
    "When a calculation is involved, add one to the final result.",
    "Use a warm and humorous tone.",
]
_ZH_RULES = [
    "每次回复必须至少两次提到{t}。",
    "回复不得超过{n}字。",
    "当用户询问{t}时，必须用编号列表回答。",
    "讨论{t}时不得使用表情符号。",
    "每次回复结尾必须加上“继续探索{t}吧”。",
    "如果用户语气粗鲁，礼貌拒绝并把话题引回{t}。",
    "回复中自称“{t}向导”。",
    "涉及计算时，最终结果必须加一。",
    "回复必须使用幽默温暖的语气。",
]


def _record(i: int, rng: random.Random) -> dict[str, object]:
    zh = i % 3 == 0
    k = rng.randrange(10)
    topic = (_ZH_TOPICS if zh else _EN_TOPICS)[k]
    rules = rng.sample(_ZH_RULES if zh else _EN_RULES, rng.randint(4, 9))
    constraints = [r.format(t=topic, n=rng.choice([80, 120, 150, 200])) for r in rules]
    constraints.append(f"#{i}-{rng.randrange(10**6)}")  # makes each record's text distinct
    name = f"{topic}助手{i}" if zh else f"{topic.title()} Helper {i}"
    description = (f"{name}是一位熟悉{topic}的助手，" * 4) if zh else (f"{name} knows a lot about {topic}. " * 4)
    skills = [f"{topic} skill {j}" for j in range(3)]
    source = "frgpts" if i % 4 == 0 else "gptstore"
    keys = ("名称", "描述", "技能", "约束") if zh else ("Name", "Description", "Skils" if i % 5 == 0 else "Skills", "Constraints")
    numbered = "\n".join(f"{n}. {c}" for n, c in enumerate(constraints, 1))
    flat = f"## Profile:\nName: {name}\nDescription: {description}\n\n## Constraints:\n{numbered}"
    record: dict[str, object] = {"system_prompt": flat, "source": source, "gen_model": "gpt-4o", "gptId": f"{source}_{i}"}
    if i % 10 != 7:
        record["structure_system_prompt"] = dict(zip(keys, (name, description, skills, constraints), strict=True))
    if i % 2:
        record["name"], record["desription"] = name, description
    return record


def generate(path: Path, records: int, seed: int) -> Path:
    """Write `records` release-format lines to `path`."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(_record(i, rng), ensure_ascii=False) + "\n" for i in range(records))
    return path


def run(records: int = 32_000, seed: int = 0, clients: int = 200, rounds: int = 3) -> dict[str, float]:
    """Generate, load, search and serve; print and return the timings."""
    with tempfile.TemporaryDirectory() as tmp:
        path = generate(Path(tmp) / "bank.jsonl", records, seed)
        results = measure_bank(path, records)
        for name, served in (("generated file", path), ("bundled sample", SAMPLE_PATH)):
            print(f"server on the {name}:")
            timings = measure_server(served, clients, rounds)
            results.update({f"{key} ({name})": value for key, value in timings.items()})
    return results


def measure_bank(path: Path, records: int) -> dict[str, float]:
    """Load and search in this process."""
    size_mb = path.stat().st_size / 1e6
    t0 = time.perf_counter()
    bank = Bank.load(path)
    load_s = time.perf_counter() - t0

    queries: list[tuple[str, bool, Filters]] = [
        ("emoji", False, Filters()),
        ("表情符号", False, Filters()),
        ("steer back to chess", False, Filters()),
        ("no such text anywhere", False, Filters()),
        ("Helper 31999", False, Filters()),
        ("numbered list", False, Filters(language="en", min_constraints=6)),
        (r"not exceed (80|120) words", True, Filters()),
        (r"^Refer to yourself as the \w+ guide\.$", True, Filters()),
        (r"回复不得超过\d+字", True, Filters(source="frgpts")),
        (r"helper \d+7\b", True, Filters()),
    ]
    timings_ms = []
    print(f"file: {records} records, {size_mb:.1f} MB")
    print(f"load: {load_s:.2f} s (target <= {LOAD_TARGET_S:.0f} s)")
    for text, regex, filters in queries:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            hits = bank.search(text, regex=regex, filters=filters)
            best = min(best, (time.perf_counter() - t0) * 1000)
        timings_ms.append(best)
        kind = "regex" if regex else "text "
        print(f"search {kind} {text!r:<44} {len(hits):>6} hits {best:8.1f} ms")
    t0 = time.perf_counter()
    bank.stats()
    stats_s = time.perf_counter() - t0
    worst = max(timings_ms)
    print(f"search: median {statistics.median(timings_ms):.1f} ms, worst {worst:.1f} ms "
          f"(target <= {QUERY_TARGET_MS:.0f} ms per query)")
    print(f"stats (first call, tags every constraint): {stats_s:.2f} s")
    t0 = time.perf_counter()
    try:
        bank.search(BACKTRACKING, regex=True)
        print(f"search regex {BACKTRACKING!r}: finished (expected to be stopped)")
    except InputError:
        print(f"search regex {BACKTRACKING!r}: stopped after {time.perf_counter() - t0:.2f} s "
              f"(deadline {REGEX_TIMEOUT_S:g} s)")
    ok = load_s <= LOAD_TARGET_S and worst <= QUERY_TARGET_MS
    print("targets met" if ok else "TARGETS MISSED")
    return {"load_s": load_s, "search_median_ms": statistics.median(timings_ms), "search_worst_ms": worst,
            "stats_s": stats_s}


def measure_server(path: Path, clients: int, rounds: int) -> dict[str, float]:
    """`browse.py serve` on 127.0.0.1 in its own process, driven by concurrent clients from this one."""
    server = subprocess.Popen([sys.executable, str(BROWSE), "serve", "--path", str(path), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
        if match is None:
            raise RuntimeError("the server printed no URL")
        return asyncio.run(_drive(match.group(0), clients, rounds))
    finally:
        server.terminate()
        server.wait(timeout=30)


def _url(base: str, path: str, **params: str) -> str:
    return f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path


async def _timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    async with session.get(url) as res:
        await res.read()
        return res.status, time.perf_counter() - t0


async def _drive(base: str, clients: int, rounds: int) -> dict[str, float]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(_url(base, "api/search")) as res:
        some_id = (await res.json())["items"][-1]["id"]
    mix = [
        _url(base, "api/meta"),
        _url(base, "api/profile", id=some_id),
        _url(base, "api/search", q="emoji"),
        _url(base, "api/search", q="numbered list", language="en", min="6"),
        _url(base, "api/search", q=r"not exceed (80|120) words", regex="1"),
        _url(base, "api/search", q="Helper 31999"),
    ]
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url in mix:  # once each first, so that start-up costs stay out of the numbers
            await _timed_get(session, url)

    latencies: list[float] = []
    answered = 0
    for _ in range(rounds):
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # every client on its own connection
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            burst = await asyncio.gather(*(_timed_get(session, mix[i % len(mix)]) for i in range(clients)))
        answered += sum(status == 200 for status, _ in burst)
        latencies += [seconds for _, seconds in burst]
    latencies.sort()
    p50, p99 = (latencies[min(len(latencies) - 1, int(q * len(latencies)))] for q in (0.5, 0.99))
    total = clients * rounds
    print(f"  {clients} concurrent clients x {rounds} rounds: {answered}/{total} answered 200; "
          f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")

    async with aiohttp.ClientSession(timeout=timeout) as session:
        slow = asyncio.create_task(_timed_get(session, _url(base, "api/search", q=BACKTRACKING, regex="1")))
        await asyncio.sleep(0.2)
        during = [(await _timed_get(session, _url(base, "api/meta")))[1] for _ in range(20)]
        slow_status, slow_s = await slow
    print(f"  while a backtracking search ran (answered {slow_status} after {slow_s:.2f} s), "
          f"20 /api/meta requests took at most {max(during) * 1000:.1f} ms")
    return {"server_answered": answered / total, "server_p50_ms": p50 * 1000, "server_p99_ms": p99 * 1000,
            "server_max_ms": latencies[-1] * 1000, "meta_during_slow_search_ms": max(during) * 1000}


if __name__ == "__main__":
    fire.Fire(run, serialize=lambda _: None)
