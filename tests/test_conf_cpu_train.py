"""The CPU recipe trains: `conf/cpu/rpo.yaml` through the real `llamafactory-cli train` on a tiny model.

A temporary copy of the shipped YAML changes only where the model, the data and the output are, and
stops after two steps; everything else (template, LoRA, bf16 off, workers, batch) is as shipped. The
tiny tokenizer has the chatml special tokens that the shipped `qwen` template uses.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rpo.utils.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARGIN = 2


def _pairs(n: int) -> list[dict]:
    return [
        {
            "conversations": [
                {"from": "system", "value": "Answer briefly. Never use commas."},
                {"from": "human", "value": f"Tell me about item {i}."},
            ],
            "chosen": {"from": "gpt", "value": f"Item {i} is small and blue"},
            "rejected": {"from": "gpt", "value": f"Item {i}, sadly, is large, red, and loud"},
            "margin": MARGIN,
        }
        for i in range(n)
    ]


def test_cpu_rpo_recipe_trains_on_a_tiny_model(tmp_path):
    shipped = yaml.safe_load((REPO / "conf/cpu/rpo.yaml").read_text())
    build_tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    (data / "rpo.json").write_text(json.dumps(_pairs(20)))
    (data / "dataset_info.json").write_text(json.dumps({shipped["dataset"]: {
        "file_name": "rpo.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "margin": "margin"},
    }}))
    config = {**shipped, "model_name_or_path": str(tmp_path / "model"), "dataset_dir": str(data),
              "output_dir": str(tmp_path / "run"), "max_steps": 2}
    (tmp_path / "rpo.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), "train", str(tmp_path / "rpo.yaml")],
        cwd=tmp_path, env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [h for h in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(steps) == 2
    # LoRA starts as the identity, so the policy equals the reference at step 1: Δ = 0 and every pair's
    # loss is softplus(β·γ·g)
    beta_gamma = shipped["pref_beta"] * shipped["rpo_gamma"]
    assert steps[0]["loss"] == pytest.approx(math.log1p(math.exp(beta_gamma * MARGIN)), abs=1e-4)
    assert steps[0]["rpo/margin_mean"] == MARGIN
    assert (tmp_path / "run" / "adapter_config.json").is_file()
