"""Training checks `model_name_or_path` before it starts: a missing local model is one line, not a
minute of hub retries and a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rpo_llamafactory.patch import looks_local, model_path_problem

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIX = "build a tiny one with `python src/utils/tiny_model.py {0}`, or download one, e.g. " \
      "`hf download Qwen/Qwen2.5-0.5B-Instruct --local-dir {0}`"


@pytest.mark.parametrize(("name", "local"), [
    ("models/Qwen2.5-0.5B-Instruct", True),   # the hub keeps "models/" for its own pages
    ("./Qwen2.5-0.5B-Instruct", True),
    ("/models/Llama-3.1-8B-Instruct", True),
    ("saves/llama3.1_8b/merged", True),
    ("~/models/qwen", True),
    ("Qwen/Qwen2.5-0.5B-Instruct", False),
    ("gpt2", False),
])
def test_local_looking_paths_are_told_from_hub_ids(name, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_local(name) is local


def test_a_folder_of_this_tree_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    assert looks_local("checkpoints/run1") and not looks_local("Checkpoints-org/run1")


def test_problems_name_the_path_and_the_ways_to_get_a_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    missing = "models/Qwen2.5-0.5B-Instruct"
    assert model_path_problem(missing) == f"model_name_or_path {missing!r} does not exist: {FIX.format(missing)}"
    (tmp_path / "empty").mkdir()
    assert model_path_problem("./empty") == (
        f"model_name_or_path './empty' is a folder without a model (no config.json): {FIX.format('./empty')}")
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert model_path_problem("./empty") is None
    assert model_path_problem("Qwen/Qwen2.5-0.5B-Instruct") is None  # a hub id: left to the hub


def test_offline_a_hub_id_missing_from_the_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_path_problem("someone/not-cached") == (
        "model_name_or_path 'someone/not-cached' is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
        "set: download it first, or give a local folder")


def test_shipped_cpu_recipe_without_its_model_stops_in_one_line(tmp_path):
    """`llamafactory-cli train conf/cpu/rpo.yaml` before the model is there (run from a folder that
    does not hold it): one line, exit 1, fast."""
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    config = REPO / "conf" / "cpu" / "rpo.yaml"
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "llamafactory-cli"), "train", str(config)], check=False, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[rpo]")]
    expected = (f"[rpo] error: {config}: model_name_or_path 'models/Qwen2.5-0.5B-Instruct' does not exist: "
                f"{FIX.format('models/Qwen2.5-0.5B-Instruct')}")
    assert lines == [expected]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert time.monotonic() - started < 60  # no hub retries
