"""`dataset_info.json` registration: concurrent runs into one dataset_dir lose no entry."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from rpo.utils.dataset_registry import ENTRIES, register_dataset
from rpo.utils.io import InputError


def _register_many(dataset_dir: str, name: str, start: multiprocessing.synchronize.Barrier) -> None:
    start.wait()
    for round_ in range(10):
        register_dataset(dataset_dir, f"{name}_{round_}", "rpo")


def test_four_processes_registering_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for trial in range(10):
        dataset_dir = tmp_path / f"trial{trial}"
        register_dataset(dataset_dir, "shipped", "dpo")
        start = context.Barrier(4)
        workers = [
            context.Process(target=_register_many, args=(str(dataset_dir), f"build{k}", start)) for k in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        info = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
        expected = {"shipped"} | {f"build{k}_{r}" for k in range(4) for r in range(10)}
        assert set(info) == expected, f"trial {trial}: lost {sorted(expected - set(info))}"
        assert info["build3_9"] == {"file_name": "build3_9.json", **ENTRIES["rpo"]}
        assert sorted(p.name for p in dataset_dir.iterdir()) == ["dataset_info.json"]  # no lock or temp file left


def test_a_corrupt_registry_is_refused_in_one_line_and_kept(tmp_path: Path) -> None:
    info = tmp_path / "dataset_info.json"
    info.write_bytes(b'{"a": \xff}')
    with pytest.raises(InputError, match=r"dataset_info.json: line 1: not valid UTF-8 \(byte 7\)"):
        register_dataset(tmp_path, "rpo", "rpo")
    info.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object of datasets, got list"):
        register_dataset(tmp_path, "rpo", "rpo")
    assert info.read_text() == "[1, 2]"
