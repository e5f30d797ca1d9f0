"""Pair construction throughput against an I/O floor, and its peak memory as the input grows.

    python benchmarks/pair_construction.py [--sessions=20000] [--turns=3] [--samples=5] [--seed=0]
        [--repeats=3] [--workers=N]

Generates a synthetic detail file (5-10 constraints a session, some without reversal, random follow
vectors) in a temp dir, then in fresh processes:

- floor: read the detail file line by line and write as many bytes as the RPO dataset holds, in
  one piece per input line (the build writes one batch per session), to a temp file that is synced and renamed (as every whole-file output is):
  the cost of the I/O any construction must do;
- build: `build_rpo_dataset` on the same file (validation, pairing, statistics, output), with its
  default of one worker process per CPU (`--workers=1` measures the one-process path);
- build on a quarter of the sessions, to show peak RSS does not grow with the input.

Prints the best time of each over the repeats, the ratio over the floor (target <= 2x) and peak RSS.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

WORDS = [
    "reply",
    "answer",
    "summary",
    "budget",
    "travel",
    "recipe",
    "garden",
    "invoice",
    "meeting",
    "report",
    "schedule",
    "weather",
    "story",
    "plan",
    "route",
    "lesson",
    "review",
    "draft",
    "email",
    "table",
    "bullet",
    "number",
    "question",
    "example",
    "reason",
    "detail",
    "step",
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def generate(path: str, sessions: int = 20000, turns: int = 3, samples: int = 5, seed: int = 0) -> None:
    """Write a synthetic SPEC §4.2 detail file."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for s in range(sessions):
            n = rng.randint(5, 10)
            constraints = [f"Rule {k + 1}: {_text(rng, 10)}" for k in range(n)]
            record = {
                "session_id": f"bench_{s}",
                "profile": {
                    "name": f"Assistant {s}",
                    "description": _text(rng, 25),
                    "skills": [_text(rng, 6) for _ in range(3)],
                    "constraints": constraints,
                },
                "reversed_constraints": [None if rng.random() < 0.1 else f"Not {c}" for c in constraints],
                "turns": [
                    {
                        "query": _text(rng, 20),
                        "reference_response": _text(rng, 40),
                        "samples": [
                            {"response": _text(rng, 40), "follows": [rng.random() < 0.7 for _ in range(n)]}
                            for _ in range(samples)
                        ],
                    }
                    for _ in range(turns)
                ],
            }
            fh.write(json.dumps(record) + "\n")


def floor(detail_path: str, output_path: str, output_bytes: int) -> None:
    """Read every input line; write `output_bytes` in one piece per line, atomically as the build does."""
    from rpo.utils.io import atomic_write

    with open(detail_path, encoding="utf-8") as src:
        lines = sum(1 for _ in src)
    piece = "x" * (output_bytes // max(1, lines))
    with open(detail_path, encoding="utf-8") as src, atomic_write(output_path) as out:
        for _ in src:
            out.write(piece)
        out.write("x" * (output_bytes - len(piece) * lines))


def build(detail_path: str, output_dir: str, workers: int | None = None) -> None:
    """Build the RPO dataset and print its record count as JSON."""
    from rpo.utils.pairs.build import build_rpo_dataset

    counters = build_rpo_dataset(detail_path, output_dir, "rpo", workers=workers)
    print(json.dumps({"records": counters.pairs}))


def _timed(*args: str) -> tuple[float, float, str]:
    """Run a subcommand in a fresh process: (seconds, peak RSS MiB of the largest child so far, stdout)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak / 1024, out


def main(
    sessions: int = 20000, turns: int = 3, samples: int = 5, seed: int = 0, repeats: int = 3, workers: int | None = None
) -> None:
    """Floor and build alternately `repeats` times (the best of each counts: the machine is shared)."""
    with tempfile.TemporaryDirectory(prefix="pair_bench_") as tmp:
        root = Path(tmp)
        detail, small = root / "detail.jsonl", root / "small.jsonl"
        generate(str(detail), sessions, turns, samples, seed)
        generate(str(small), sessions // 4, turns, samples, seed)
        mb_in = detail.stat().st_size / 2**20

        options = [] if workers is None else [f"--workers={workers}"]
        small_s, small_rss, _ = _timed("build", str(small), str(root / "small"), *options)
        (root / "small" / "rpo.json").unlink()
        builds, floors = [], []
        for _ in range(repeats):
            seconds, build_rss, out = _timed("build", str(detail), str(root / "out"), *options)
            builds.append(seconds)
            records = json.loads(out)["records"]
            dataset = root / "out" / "rpo.json"
            out_bytes = dataset.stat().st_size
            dataset.unlink()
            floors.append(_timed("floor", str(detail), str(root / "floor.bin"), str(out_bytes))[0])
            (root / "floor.bin").unlink()
        build_s, floor_s = min(builds), min(floors)

        print(f"input: {sessions} sessions x {turns} turns x {samples} samples, {mb_in:.0f} MiB")
        print(f"output: {records} records, {out_bytes / 2**20:.0f} MiB")
        print(f"floor (read input lines, write output bytes): {floor_s:.2f} s (runs: {_times(floors)})")
        from rpo.utils.pairs.parallel_array import default_workers

        used = workers or default_workers()
        print(
            f"build_rpo_dataset ({used} worker{'s' * (used > 1)}): {build_s:.2f} s (runs: {_times(builds)}), "
            f"{records / build_s:,.0f} records/s"
        )
        print(f"ratio over floor: {build_s / floor_s:.2f}x")
        print(f"peak RSS: {build_rss:.0f} MiB at {sessions} sessions, {small_rss:.0f} MiB at {sessions // 4}")
        print(f"(quarter-size build: {small_s:.2f} s)")


def _times(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


COMMANDS = {"main": main, "generate": generate, "floor": floor, "build": build}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.argv.insert(1, "main")
    fire.Fire(COMMANDS)
