"""The settings an evaluation run's numbers depend on, recorded in its folder as `run.json`.

A resumed run appends to what an earlier run wrote; if the data file, the model or any setting
changed in between, the result would mix two evaluations. The first run records its settings and
every later run in that folder must bring the same ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rpo.utils.io import InputError, write_json

RUN_FILE = "run.json"


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes (read in blocks: data files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_or_record(output_dir: Path, settings: dict[str, Any]) -> None:
    """Write `run.json` in a fresh folder; in a resumed one, refuse the first setting that differs."""
    path = Path(output_dir) / RUN_FILE
    current = json.loads(json.dumps(settings, ensure_ascii=False))
    if not path.exists():
        write_json(path, current)
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{path}: not a run record ({type(err).__name__}): use another output folder") from None
    if not isinstance(recorded, dict):
        raise InputError(f"{path}: not a run record (expected a JSON object): use another output folder")
    for key in [*current, *(k for k in recorded if k not in current)]:
        before, now = recorded.get(key, "<unset>"), current.get(key, "<unset>")
        if before != now:
            raise InputError(f"{path.parent}: was run with {key}={json.dumps(before, ensure_ascii=False)}, "
                             f"not {json.dumps(now, ensure_ascii=False)}: rerun with the same settings "
                             "or use another output folder")
