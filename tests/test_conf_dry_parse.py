"""Every shipped LLaMA-Factory YAML passes LLaMA-Factory's own argument parsing, with the patch active.

How the dry parse works: `llamafactory-cli train X.yaml` reads the YAML and hands it to
`llamafactory.hparams.get_train_args`, which builds every argument dataclass (HfArgumentParser refuses
unknown keys; the patch adds `rpo_gamma` and names the nearest key for a typo) and runs all of
LLaMA-Factory's cross-checks. Only then does the workflow load a tokenizer and weights. The test calls
that same function on each YAML, in this process (the patch is active here through the `.pth` hook),
so it needs no weights and no GPU. What this machine cannot provide is replaced, and nothing else:
- `deepspeed`: the JSON must exist and parse, but the key is dropped (DeepSpeed is a GPU-only extra
  and its configs need a torchrun launch);
- `use_cpu: true`, as there is no GPU here (bf16 stays as shipped);
- the demo YAMLs leave `model_name_or_path` and `output_dir` to the demo runner: placeholders go in.
`conf/pipeline/*.yaml` are not LLaMA-Factory configs (they set the LLM roles of the data pipeline)
and are left out; `conf/deepspeed/*` are JSONs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TRAINING_YAMLS = sorted(p for p in CONF.rglob("*.yaml") if p.parent.name not in ("pipeline",))
PAPER_SETUP = {  # per-device batch, GPUs, cutoff_len of the authors' configs, by model
    "llama3.1_70b": (1, 8, 4096),
    "qwen2.5_72b": (2, 8, 2048),
    "qwen2.5_7b": (4, 4, 2048),
    "": (2, 8, 4096),  # Llama-3.1-8B
}


def _label(path: Path) -> str:
    return str(path.relative_to(CONF))


def test_every_training_yaml_is_covered():
    names = {_label(p) for p in TRAINING_YAMLS}
    assert {"rpo.yaml", "demo/rpo.yaml", "cpu/rpo.yaml", "cpu/dpo.yaml"} <= names
    assert all(yaml.safe_load(p.read_text()).get("roles") for p in (CONF / "pipeline").glob("*.yaml"))


def dry_parse(path: Path, tmp_path: Path):
    from llamafactory.hparams import get_train_args
    from rpo_llamafactory.patch import looks_local

    config = yaml.safe_load(path.read_text())
    deepspeed = config.pop("deepspeed", None)
    if deepspeed:
        json.loads((REPO / deepspeed).read_text())
    config.setdefault("model_name_or_path", "placeholder/model")
    if looks_local(config["model_name_or_path"]):  # a local model this machine lacks: training refuses those
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        config["model_name_or_path"] = str(tmp_path / "model")
    config.setdefault("output_dir", str(tmp_path / "out"))
    config["use_cpu"] = True
    return config, get_train_args(config)


@pytest.mark.parametrize("path", TRAINING_YAMLS, ids=_label)
def test_llamafactory_accepts_the_yaml(path, tmp_path):
    config, (_, data_args, training_args, finetuning_args, _) = dry_parse(path, tmp_path)
    assert finetuning_args.stage == config["stage"]
    assert finetuning_args.rpo_gamma == config.get("rpo_gamma", 0.0)
    if path.name.startswith("rpo"):
        assert finetuning_args.rpo_gamma == 0.05 and finetuning_args.pref_beta == 0.1
    assert training_args.gradient_accumulation_steps == config.get("gradient_accumulation_steps", 1)
    assert data_args.val_size == config.get("val_size", 0.0)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=_label)
def test_paper_recipe_and_its_comments_agree(path, tmp_path):
    """The authors' per-device batch × 64 accumulation on their GPU count (effective batch 1,024; 512
    for the 70B), their cutoff_len, logging every step and evaluation and a checkpoint every 5 steps,
    a 10 % validation split, and a header that states the same numbers."""
    _, (_, data_args, training_args, finetuning_args, _) = dry_parse(path, tmp_path)
    model = re.sub(r"^(rpo|dpo|kto|sft)_?", "", path.stem)
    batch, gpus, cutoff = PAPER_SETUP[model]
    assert training_args.per_device_train_batch_size == training_args.per_device_eval_batch_size == batch
    assert training_args.gradient_accumulation_steps == 64 and data_args.cutoff_len == cutoff
    assert (training_args.logging_steps, training_args.eval_steps, training_args.save_steps) == (1, 5, 5)
    assert batch * 64 * gpus == (512 if model == "llama3.1_70b" else 1024)
    assert training_args.learning_rate == (5e-5 if finetuning_args.stage == "sft" else 5e-4)
    assert data_args.val_size == 0.1 and training_args.eval_strategy == "steps" and training_args.eval_steps
    assert data_args.dataset_dir == "data"
    header = path.read_text()
    assert f"x {gpus} GPUs = effective batch {batch * 64 * gpus} on {gpus} GPUs; cutoff_len {cutoff}" in header
    if path.stem.startswith("rpo"):
        assert "pref_beta * rpo_gamma" in header  # γ sits inside β; Eq. 4 prints it outside


@pytest.mark.parametrize("path", sorted((CONF / "cpu").glob("*.yaml")), ids=_label)
def test_cpu_recipe_needs_no_gpu(path, tmp_path):
    _, (_, data_args, training_args, _, _) = dry_parse(path, tmp_path)
    config = yaml.safe_load(path.read_text())
    assert config["use_cpu"] is True and config["bf16"] is False
    assert training_args.dataloader_num_workers == 0 and data_args.preprocessing_num_workers <= 2
