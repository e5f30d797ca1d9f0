"""A stand-in for `rpo.demo.training.train` in the experiment smoke tests that check orchestration
(which arm trains from which base on which data, caching, reports), not training itself.

It checks what the real call would need (a start model, a registered, non-empty dataset), then writes
the start model with its weights moved by a small seeded step that depends on the training inputs:
different data, γ or steps give different models, the same inputs the same model, in well under a
second instead of a `llamafactory-cli` start. Every method it stands in for is also trained for real
by the experiment that runs through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import yaml
from rpo.demo.training import CONF
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def training_inputs(config: str, overrides: dict) -> bytes:
    """What a real training's result would depend on: recipe, dataset rows and the budget fields."""
    data_dir = Path(overrides["dataset_dir"])
    info = json.loads((data_dir / "dataset_info.json").read_text())
    dataset = overrides.get("dataset") or yaml.safe_load((CONF / f"{config}.yaml").read_text())["dataset"]
    entry = info[dataset]
    rows = (data_dir / entry["file_name"]).read_bytes()
    if not json.loads(rows):
        raise RuntimeError(f"stand-in training: {entry['file_name']} has no records")
    budget = {key: overrides.get(key) for key in ("rpo_gamma", "max_steps", "learning_rate", "num_train_epochs", "seed")}
    return config.encode() + rows + json.dumps(budget, sort_keys=True).encode()


def stand_in_train(config: str, work: Path, name: str, desc: str, threads: int | None = None, **overrides) -> Path:
    start = Path(overrides["model_name_or_path"])
    seed = int.from_bytes(hashlib.sha256(training_inputs(config, overrides)).digest()[:8], "big")
    print(f"{desc}: stand-in training of {config} from {start.name}", flush=True)
    output_dir = work / "models" / name
    shutil.rmtree(output_dir, ignore_errors=True)
    shutil.copytree(start, output_dir)
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(str(start / WEIGHTS))
    moved = {key: value + 0.02 * value.float().std().nan_to_num() * torch.randn(value.shape, generator=generator)
             .to(value.dtype) if value.is_floating_point() and value.numel() > 1 else value
             for key, value in weights.items()}
    save_file(moved, str(output_dir / WEIGHTS), metadata={"format": "pt"})
    return output_dir
