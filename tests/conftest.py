"""Session-wide fixtures: the QUICK demo runs once, and the experiment smoke tests start from its base.

Under pytest-xdist each worker is its own session: the first worker to ask runs the demo, in a folder
that all workers of the run share, and the others wait on its lock and read what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock


def shared_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test run's temporary folder, the same for every xdist worker of the run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, Path, dict, subprocess.CompletedProcess]:
    """`make demo QUICK=1`'s run, with `--keep` so that its seed-0 base can be reused: (folder the command
    ran in, its output folder, report, process)."""
    base = shared_temp(tmp_path_factory) / "quick_demo"
    finished = base.with_suffix(".json")  # beside the folder, which holds only what the command wrote
    with FileLock(f"{base}.lock"):
        if not finished.exists():
            base.mkdir(exist_ok=True)
            # a relative output folder, as `make demo` passes it; no --figure_path, so the default is used
            proc = subprocess.run(
                [sys.executable, "-m", "rpo.demo.run", "--quick", "--keep", "--output_dir", "run"],
                capture_output=True, text=True, timeout=900, cwd=base, check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            finished.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                                            "stderr": proc.stderr}))
    ran = json.loads(finished.read_text())
    proc = subprocess.CompletedProcess(ran["args"], ran["returncode"], ran["stdout"], ran["stderr"])
    out = base / "run"
    return base, out, json.loads((out / "report.json").read_text()), proc
