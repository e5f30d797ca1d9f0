"""Session-wide fixtures: the QUICK demo runs once, and the experiment smoke tests start from its base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, Path, dict, subprocess.CompletedProcess]:
    """`make demo QUICK=1`'s run, with `--keep` so that its seed-0 base can be reused: (folder the command
    ran in, its output folder, report, process)."""
    base = tmp_path_factory.mktemp("demo")
    # a relative output folder, as `make demo` passes it; no --figure_path, so the default is used
    proc = subprocess.run(
        [sys.executable, "-m", "rpo.demo.run", "--quick", "--keep", "--output_dir", "run"],
        capture_output=True, text=True, timeout=900, cwd=base, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = base / "run"
    return base, out, json.loads((out / "report.json").read_text()), proc
