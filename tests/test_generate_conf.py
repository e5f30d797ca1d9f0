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
from rpo.utils.generate_conf_file import (
    build_config,
    gradient_accumulation,
    paper_effective_batch,
    per_device_batch_for,
)
from rpo.utils.io import InputError
from rpo.utils.tiny_model import build_tiny_model
from transformers import AutoTokenizer

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
    """The 38th of 40 lengths: prompt and (longer) chosen answer as the model's chat template lays them out."""
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    roles = {"system": "system", "human": "user"}

    def length(row: dict) -> int:
        messages = [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
        text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": row["chosen"]["value"]}],
                                             tokenize=False)
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    p95 = sorted(map(length, rows))[37]
    return max(256, min(cap, math.ceil(p95 / 256) * 256))


def test_rpo_config_content(setup):
    _, model, data, rows = setup
    warnings: list[str] = []
    config = build_config(str(model), "rpo", method="rpo", gpus=1, gamma=0.05, dataset_dir=str(data),
                          warnings=warnings)
    assert warnings == [
        ("effective batch 1024 exceeds the 36 training examples of rpo (after the 10% validation split): each epoch "
         "is one optimisation step on all of them; lower --effective_batch for more steps")
    ]
    assert config["template"] == "chatml"
    assert config["stage"] == "dpo" and config["rpo_gamma"] == 0.05 and config["pref_beta"] == 0.1
    assert config["cutoff_len"] == _expected_cutoff(model, rows, 8192)
    assert "deepspeed" not in config
    # 36 training examples (40 less the 10 % validation split) / 1024 per step → 1 step per epoch, 3 in all:
    # the authors' rule logs every step and evaluates and saves every 5
    assert config["logging_steps"] == 1 and config["save_steps"] == config["eval_steps"] == 5


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
    assert proc.stderr.startswith("warning: effective batch 1024 exceeds the 36 training examples of rpo")
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


@pytest.mark.parametrize(
    ("gpus", "effective_batch", "accumulation"),
    [(1, None, 512), (4, None, 128), (8, None, 64), (1, 512, 256), (4, 512, 64), (8, 512, 32)],
)
def test_accumulation_reaches_the_effective_batch(setup, gpus, effective_batch, accumulation):
    """Default: the authors' batch, 2 per device × 64 steps × 8 GPUs = 1024 for a Llama-class 8B model."""
    _, model, data, _ = setup
    config = build_config(str(model), "rpo", gpus=gpus, dataset_dir=str(data), effective_batch=effective_batch)
    assert config["per_device_train_batch_size"] == 2
    assert config["gradient_accumulation_steps"] == accumulation
    assert gpus * 2 * accumulation == (effective_batch or 1024)
    assert config["val_size"] == 0.1 and config["eval_strategy"] == "steps"


def test_per_device_batch_follows_the_model_size(setup, tmp_path):
    _, model, data, _ = setup
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28,
                                                  "intermediate_size": 18944, "vocab_size": 152064}))
    large = tmp_path / "large"
    large.mkdir()
    (large / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80,
                                                   "intermediate_size": 28672, "vocab_size": 128256}))
    large_qwen = tmp_path / "large_qwen"
    large_qwen.mkdir()
    (large_qwen / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8192,
                                                        "num_hidden_layers": 80, "intermediate_size": 29568,
                                                        "vocab_size": 152064}))
    assert gradient_accumulation(4 * 64 * 8, 8, per_device_batch_for(qwen)) == 64
    assert per_device_batch_for(qwen) == 4 and per_device_batch_for(large) == 1 and per_device_batch_for(model) == 2
    assert per_device_batch_for(large_qwen) == 2
    # the authors' effective batches: Qwen2.5-7B on 4 GPUs, the rest on 8
    assert [paper_effective_batch(m, per_device_batch_for(m)) for m in (qwen, large, large_qwen, model)] == [
        1024, 512, 1024, 1024]


def _one_line_refusal(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gamma=abc"], "--gamma: expected a number >= 0, got 'abc'"),
        (["--gamma=-0.1"], "--gamma: expected a number >= 0, got -0.1"),
        (["--gpus=0"], "--gpus: expected a whole number >= 1, got 0 (these are GPU configs; to train on CPU start "
                       "from conf/cpu/rpo.yaml)"),
        (["--gpus=1.5"], "--gpus: expected a whole number >= 1, got 1.5"),
        (["--gpus=8", "--effective_batch=1000"], "--effective_batch 1000 cannot be reached with 8 GPU(s) × per-device "
                                                 "batch 2 = 16 per step (nearest reachable: 992 or 1008)"),
        (["--dataset=../../x"], "--dataset: '../../x' cannot be part of a file name in the output folder; pass --output"),
        (["--output=../../x.yaml"], "--output: '../../x.yaml' would be written outside the output folder conf/generated"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(setup, tmp_path, args, message):
    _, model, data, _ = setup
    dataset = [] if any(arg.startswith("--dataset=") for arg in args) else ["--dataset=rpo"]
    proc = _cli("--model_path", str(model), *dataset, "--dataset_dir", str(data), *args, cwd=tmp_path)
    _one_line_refusal(proc, message)
    assert not (tmp_path / "conf").exists() and not list(tmp_path.parent.glob("x.yaml"))


def test_empty_dataset_is_refused(setup, tmp_path):
    _, model, data, _ = setup
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "empty.json").write_text("[]")
    (empty / "dataset_info.json").write_text(json.dumps({"empty": {"file_name": "empty.json", "ranking": True}}))
    proc = _cli("--model_path", str(model), "--dataset=empty", "--dataset_dir", str(empty), cwd=tmp_path)
    _one_line_refusal(proc, f"{empty / 'empty.json'}: the dataset has no examples")


def test_output_folder_that_is_a_file_is_refused(setup, tmp_path):
    _, model, data, _ = setup
    (tmp_path / "taken").write_text("")
    proc = _cli("--model_path", str(model), "--dataset=rpo", "--dataset_dir", str(data), "--output_dir=taken",
                cwd=tmp_path)
    _one_line_refusal(proc, f"{tmp_path / 'taken'}: exists and is not a directory")


def test_unwritable_output_folder_is_refused(setup, tmp_path):
    """A read-only folder; as root (who may write anywhere a mode allows) /sys, which refuses new files."""
    _, model, data, _ = setup
    if os.geteuid() == 0:
        folder = Path("/sys")
        message = f"{folder / 'tiny-chat_rpo_rpo.yaml'}: cannot write (Permission denied)"
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        message = f"{folder}: not writable"
    proc = _cli("--model_path", str(model), "--dataset=rpo", "--dataset_dir", str(data), f"--output_dir={folder}",
                cwd=tmp_path)
    _one_line_refusal(proc, message)


@pytest.mark.parametrize(
    ("rows", "entry", "message"),
    [
        ('[{"conversations": "hi"}]', {"file_name": "bad.json", "formatting": "sharegpt"},
         "{data}/bad.json: record 0: field conversations: expected a list of messages, got str"),
        ('[["a"]]', {"file_name": "bad.json"}, "{data}/bad.json: record 0: expected a JSON object, got list"),
        ('[{"conversations": [{"from": "human", "value": null}]}]', {"file_name": "bad.json", "formatting": "sharegpt"},
         "{data}/bad.json: record 0: field conversations[0].value: expected text, got nothing"),
        ('[{"instruction": "q", "output": 3}]', {"file_name": "bad.json"},  # alpaca, LLaMA-Factory's default
         "{data}/bad.json: record 0: field output: expected text, got int"),
        ('{"a": 1}', {"file_name": "bad.json", "formatting": "sharegpt"},  # one JSON line
         "{data}/bad.json: record 0: field conversations: expected a list of messages, got nothing"),
        ("[]", {"formatting": "sharegpt"},
         "{data}/dataset_info.json: dataset 'bad': field file_name: expected the dataset's file name"),
    ],
)
def test_datasets_of_the_wrong_shape_are_refused(setup, tmp_path, rows, entry, message):
    _, model, _, _ = setup
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.json").write_text(rows)
    (data / "dataset_info.json").write_text(json.dumps({"bad": entry}))
    with pytest.raises(InputError) as err:
        build_config(str(model), "bad", dataset_dir=str(data))
    assert str(err.value) == message.format(data=data)


def test_non_utf8_files_are_refused_in_one_line(setup, tmp_path):
    _, model, data, _ = setup
    latin = tmp_path / "data"
    latin.mkdir()
    (latin / "dataset_info.json").write_bytes(b'{"caf\xe9": {"file_name": "x.json"}}')
    proc = _cli("--model_path", str(model), "--dataset=x", "--dataset_dir", str(latin), cwd=tmp_path)
    _one_line_refusal(proc, f"{latin / 'dataset_info.json'}: line 1: not valid UTF-8 (byte 6)")
    odd = tmp_path / "model"
    odd.mkdir()
    (odd / "config.json").write_bytes(b'{"model_type": "\xff"}')
    with pytest.raises(InputError, match=r"config.json: line 1: not valid UTF-8 \(byte 17\)$"):
        build_config(str(odd), "rpo", dataset_dir=str(data), per_device_batch=2)
