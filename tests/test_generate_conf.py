"""The config generator on a tiny model and dataset, and one real training run of its output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

from rpo.utils.generate_conf_file import build_config
from rpo.utils.tiny_model import build_tiny_model

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("genconf")
    model = build_tiny_model(root / "tiny-chat")
    data = root / "data"
    data.mkdir()
    rows = []
    for i in range(40):
        rows.append(
            {
                "conversations": [
                    {"from": "system", "value": "Rules: be brief. " * (1 + i % 7)},
                    {"from": "human", "value": f"question number {i} " * (1 + i % 5)},
                ],
                "chosen": {"from": "gpt", "value": "a fine answer " * (1 + i % 11)},
                "rejected": {"from": "gpt", "value": "no"},
                "margin": 1 + i % 3,
            }
        )
    (data / "rpo.json").write_text(json.dumps(rows))
    info = {
        "rpo": {
            "file_name": "rpo.json",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "margin": "margin"},
        }
    }
    (data / "dataset_info.json").write_text(json.dumps(info))
    return root, model, data, rows


def _expected_cutoff(model: Path, rows: list[dict], cap: int) -> int:
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    lengths = sorted(
        len(tokenizer("\n".join([m["value"] for m in r["conversations"]] + [r["chosen"]["value"]])).input_ids) + 16
        for r in rows
    )
    p95 = lengths[math.ceil(0.95 * len(lengths)) - 1]
    return max(256, min(cap, math.ceil(p95 / 256) * 256))


def test_rpo_config_content(setup):
    _, model, data, rows = setup
    config = build_config(str(model), "rpo", method="rpo", gpus=1, gamma=0.05, dataset_dir=str(data))
    assert config["template"] == "chatml"
    assert config["stage"] == "dpo" and config["rpo_gamma"] == 0.05 and config["pref_beta"] == 0.1
    assert config["cutoff_len"] == _expected_cutoff(model, rows, 8192)
    assert "deepspeed" not in config
    # 36 training examples (40 less the 10 % validation split) / 512 per step → 1 step per epoch, 3 in all
    assert config["logging_steps"] == 1 and config["save_steps"] == 10


def test_cutoff_is_capped_and_methods_differ(setup):
    _, model, data, _ = setup
    dpo = build_config(str(model), "rpo", method="dpo", gpus=8, dataset_dir=str(data), max_cutoff=256)
    assert "rpo_gamma" not in dpo and dpo["cutoff_len"] == 256
    assert dpo["deepspeed"] == "conf/deepspeed/ds_z3_config.json"
    sft = build_config(str(model), "rpo", method="sft", dataset_dir=str(data))
    assert sft["stage"] == "sft" and sft["learning_rate"] == 5e-5


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "src/utils/generate_conf_file.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_unknown_model_family_is_refused(setup, tmp_path):
    root, model, data, _ = setup
    odd = tmp_path / "odd-model"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    proc = _cli("--model_path", str(odd), "--dataset", "rpo", "--dataset_dir", str(data), cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot infer the chat template" in proc.stderr and "llama3" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_dataset_is_refused(setup, tmp_path):
    _, model, data, _ = setup
    proc = _cli("--model_path", str(model), "--dataset", "nope", "--dataset_dir", str(data), cwd=tmp_path)
    assert proc.returncode == 2
    assert "dataset 'nope' not defined (known: rpo)" in proc.stderr


def test_generated_config_trains(setup):
    root, model, data, _ = setup
    output = root / "generated.yaml"
    proc = _cli(
        "--model_path", str(model), "--dataset", "rpo", "--dataset_dir", str(data),
        "--output", str(output), "--method", "rpo", cwd=root,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"llamafactory-cli train {output}" in proc.stdout
    config = yaml.safe_load(output.read_text())
    assert config["rpo_gamma"] == 0.05
    overrides = [
        "max_steps=1", "bf16=false", "use_cpu=true", "preprocessing_num_workers=1",
        f"output_dir={root / 'run'}", "per_device_train_batch_size=2", "gradient_accumulation_steps=1",
    ]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    train = subprocess.run(
        [str(BIN / "llamafactory-cli"), "train", str(output), *overrides],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    state = json.loads((root / "run" / "trainer_state.json").read_text())
    assert "rpo/margin_mean" in state["log_history"][0]


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    """Every key of the shipped paper configs is accepted by LLaMA-Factory (with the patch)."""
    from llamafactory.hparams.parser import _parse_train_args

    config = yaml.safe_load(path.read_text())
    deepspeed = config.pop("deepspeed", None)
    if deepspeed:
        assert (REPO / deepspeed).is_file()
    config.update(bf16=False, use_cpu=True)  # this machine has no GPU; the rest parses as shipped
    _, data_args, _, finetuning_args, _ = _parse_train_args(config)
    assert data_args.dataset_dir == "data"
    if path.name.startswith("rpo"):
        assert finetuning_args.rpo_gamma == 0.05 and finetuning_args.pref_beta == 0.1
    else:
        assert finetuning_args.rpo_gamma == 0.0
