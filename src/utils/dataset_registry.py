"""LLaMA-Factory's `dataset_info.json`: the entry shapes this toolkit writes, and the one function
that writes them.

Several runs may register datasets in one `dataset_dir` at once (four pair builds, a demo's arms),
so `register_dataset` reads, updates and replaces the file while holding an exclusive lock on the
directory: no run's entry is lost to another's read-modify-write, and readers only ever see a
whole file (temp file + rename).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rpo.utils.io import InputError, read_json, write_json

INFO_FILE = "dataset_info.json"
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}
ENTRIES: dict[str, dict[str, Any]] = {
    "rpo": {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "margin": "margin"},
        "tags": SHAREGPT_TAGS,
    },
    "dpo": {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "tags": SHAREGPT_TAGS,
    },
    "kto": {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "kto_tag": "kto_tag"},
        "tags": SHAREGPT_TAGS,
    },
    "sft": {
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
    },
}
"""The `dataset_info.json` entry of each kind of dataset the toolkit writes (without `file_name`)."""


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on the directory itself: it waits for other registrations and leaves no
    lock file behind."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The datasets registered in `{dataset_dir}/dataset_info.json` ({} when there is none yet)."""
    info_path = Path(dataset_dir) / INFO_FILE
    if not info_path.exists():
        return {}
    info = read_json(info_path)
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: expected a JSON object of datasets, got {type(info).__name__}")
    return info


def register_dataset(dataset_dir: str | Path, name: str, kind: str, file_name: str | None = None) -> Path:
    """Add or replace dataset `name` (a `kind` of `ENTRIES`, stored in `file_name`, by default
    `{name}.json`) in `{dataset_dir}/dataset_info.json`, keeping every other entry; returns the file."""
    directory = Path(dataset_dir)
    directory.mkdir(parents=True, exist_ok=True)
    entry = {"file_name": file_name or f"{name}.json", **ENTRIES[kind]}
    with _directory_lock(directory):
        info = read_dataset_info(directory)
        info[name] = entry
        write_json(directory / INFO_FILE, info)
    return directory / INFO_FILE
