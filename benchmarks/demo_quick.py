"""How long `make demo QUICK=1` takes, against its 3-minute budget on a 2-core CPU.

Runs the QUICK demo in a scratch folder (nothing written to the repository) and prints the wall
time, the CPU time it used (user + system, all its processes), each stage's time from the report,
and the load average before and after: on shared cores the wall time says as much about the other
work as about the demo, the CPU time much less so. Exits 1 when the run is over budget.

    .venv/bin/python benchmarks/demo_quick.py [--budget_min 3] [--repetitions 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(scratch: Path) -> dict:
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds_of_children()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rpo.demo.run", "--quick", "--output_dir", "run"],
        cwd=scratch, capture_output=True, text=True, check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"the QUICK demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((scratch / "run" / "report.json").read_text())
    return {
        "wall_min": wall / 60,
        "cpu_min": (cpu_seconds_of_children() - cpu_before) / 60,
        "report_min": report["minutes"],
        "stages_s": report["timings_s"],
        "load": (load_before, os.getloadavg()[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_min", type=float, default=3.0)
    parser.add_argument("--repetitions", type=int, default=1)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; budget {args.budget_min} min wall", flush=True)
    worst = 0.0
    for repetition in range(args.repetitions):
        with tempfile.TemporaryDirectory(prefix="demo-quick-") as scratch:
            result = run_once(Path(scratch))
        worst = max(worst, result["wall_min"])
        stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result["stages_s"].items())
        print(f"run {repetition + 1}: {result['wall_min']:.2f} min wall ({result['report_min']:.2f} in the report), "
              f"{result['cpu_min']:.2f} min CPU; load average {result['load'][0]:.1f} before, "
              f"{result['load'][1]:.1f} after", flush=True)
        print(f"  stages: {stages}", flush=True)
    verdict = "within" if worst <= args.budget_min else "OVER"
    print(f"slowest run {worst:.2f} min: {verdict} the {args.budget_min}-minute budget")
    sys.exit(0 if worst <= args.budget_min else 1)


if __name__ == "__main__":
    main()
