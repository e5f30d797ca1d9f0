"""Write a LLaMA-Factory YAML fitted to a model: a training config, or the export config that merges
a LoRA adapter into its base.

    python src/utils/generate_conf_file.py --model_path M --dataset NAME [--gpus N]
        [--method rpo|dpo|kto|sft] [--gamma 0.05] [--effective_batch B] [--per_device_batch b]
        [--dataset_dir data] [--output_dir conf/generated] [--output X.yaml]
    python src/utils/generate_conf_file.py --method merge --model_path M --adapter_path saves/.../rpo
        [--export_dir saves/.../merged] [--export_size 5] [--export_device cpu]

What it infers instead of asking:
- the chat template, from the model's chat template markers and `config.json` (refused when unknown);
- DeepSpeed by GPU count: none on one GPU, ZeRO-3 on several, ZeRO-3 with offload for ≥ 60B models;
- `cutoff_len`: the dataset's 95th-percentile token length under the model's chat template
  (`rpo.utils.dataset_lengths`, as `data_stats.py --dataset` measures it), rounded up to a multiple
  of 256 and capped;
- the per-device batch by model, as the authors trained (2 for Llama-3.1-8B and Qwen2.5-72B, 4 for
  Qwen2.5-7B, 1 for Llama-3.1-70B), the authors' effective batch (per-device batch × 64 accumulation
  × their 8 GPUs, 4 for Qwen2.5-7B: 1,024, or 512 for the 70B) unless `--effective_batch` is given,
  and the gradient accumulation that reaches it on `--gpus` GPUs (refused when no whole number of
  steps reaches it);
- logging/eval/save steps scaled to the number of optimisation steps, by the authors' rule: a log
  line every 1 % of the run (at least every step), evaluation and a checkpoint every 5 log lines,
  so their ~67-step run logs every step and evaluates and saves every 5.
Hyper-parameters follow the paper: LoRA on all linear layers, lr 5e-4 (5e-5 for SFT), β 0.1,
γ 0.05 (inside β: the paper's Eq. 4 γ is β × ours), cosine schedule, warmup 0.1, 3 epochs, bf16,
a 10 % validation split evaluated every `eval_steps`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from rpo.utils import cli
from rpo.utils.dataset_lengths import Turn, cutoff_len, dataset_examples, token_lengths
from rpo.utils.io import InputError, atomic_write, exit_on_input_error, read_json, read_text

TRAIN_METHODS = ("rpo", "dpo", "kto", "sft")
METHODS = (*TRAIN_METHODS, "merge")
# Chat-template markers → LLaMA-Factory template, checked in order (most specific first).
TEMPLATE_MARKERS = [
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("[gMASK]", "glm4"),
    ("<|im_start|>", "chatml"),
    ("[INST]", "llama2"),
]
# config.json `model_type` → template; wins over a generic marker such as chatml's `<|im_start|>`.
MODEL_TYPE_TEMPLATES = {
    "qwen2": "qwen",
    "qwen2_moe": "qwen",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3",
    "mistral": "mistral",
    "mixtral": "mistral",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "glm4": "glm4",
    "chatglm": "glm4",
    "phi3": "phi",
    "deepseek_v3": "deepseek3",
}
DEEPSPEED_DIR = Path("conf/deepspeed")
LARGE_MODEL_PARAMS = 60e9
PAPER_ACCUMULATION = 64
PAPER_GPUS = 8
PAPER_GPUS_SMALL_QWEN = 4
"""The authors' gradient accumulation and GPU count: the default effective batch is per-device batch
× 64 × 8 (1,024 for Llama-3.1-8B and Qwen2.5-72B, 512 for Llama-3.1-70B), and × 4 for Qwen2.5-7B,
which they trained on 4 GPUs (1,024)."""
LOG_LINES_PER_RUN = 100
LOG_LINES_PER_CHECKPOINT = 5
VAL_SIZE = 0.1
DEFAULT_OUTPUT_DIR = "conf/generated"


def infer_template(model_path: str | Path) -> str:
    """The LLaMA-Factory chat template of a local model directory."""
    model_path = Path(model_path)
    config = _read_json(model_path / "config.json")
    model_type = str(config.get("model_type", ""))
    chat_template = _chat_template_text(model_path)
    if model_type in MODEL_TYPE_TEMPLATES:
        return MODEL_TYPE_TEMPLATES[model_type]
    for marker, template in TEMPLATE_MARKERS:
        if marker in chat_template:
            return template
    known = sorted(set(MODEL_TYPE_TEMPLATES.values()) | {t for _, t in TEMPLATE_MARKERS})
    raise InputError(
        f"{model_path}: cannot infer the chat template (model_type {model_type or 'unknown'!r}, no known "
        f"chat-template markers); known families: {', '.join(known)}; pass --template explicitly"
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A model directory's JSON file as an object ({} when the file is not there)."""
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _chat_template_text(model_path: Path) -> str:
    jinja = model_path / "chat_template.jinja"
    if jinja.is_file():
        return read_text(jinja)
    template = _read_json(model_path / "tokenizer_config.json").get("chat_template") or ""
    return template if isinstance(template, str) else json.dumps(template)


def estimate_parameters(model_path: str | Path) -> float:
    """Rough parameter count from config.json (enough to choose ZeRO-3 offload)."""
    config = _read_json(Path(model_path) / "config.json")
    hidden = config.get("hidden_size", 0)
    layers = config.get("num_hidden_layers", 0)
    intermediate = config.get("intermediate_size", 4 * hidden)
    vocab = config.get("vocab_size", 0)
    return layers * (4 * hidden * hidden + 3 * hidden * intermediate) + 2 * vocab * hidden


def _is_qwen(model_path: str | Path) -> bool:
    return str(_read_json(Path(model_path) / "config.json").get("model_type", "")).startswith("qwen")


def per_device_batch_for(model_path: str | Path) -> int:
    """The authors' per-device batch: 2 for Qwen ≥ 60B, 1 for other ≥ 60B, 4 for smaller Qwen, else 2."""
    large = estimate_parameters(model_path) >= LARGE_MODEL_PARAMS
    if _is_qwen(model_path):
        return 2 if large else 4
    return 1 if large else 2


def paper_effective_batch(model_path: str | Path, per_device_batch: int) -> int:
    """The authors' effective batch for this model: per-device batch × 64 × their GPU count."""
    small_qwen = _is_qwen(model_path) and estimate_parameters(model_path) < LARGE_MODEL_PARAMS
    return per_device_batch * PAPER_ACCUMULATION * (PAPER_GPUS_SMALL_QWEN if small_qwen else PAPER_GPUS)


def gradient_accumulation(effective_batch: int, gpus: int, per_device_batch: int) -> int:
    """Accumulation steps with gpus × per-device batch × steps = effective batch, or a one-line refusal."""
    per_step = gpus * per_device_batch
    if effective_batch % per_step:
        lower = max(per_step, effective_batch // per_step * per_step)
        upper = (effective_batch // per_step + 1) * per_step
        nearest = f"{lower} or {upper}" if lower != upper and effective_batch > per_step else f"{upper}"
        raise InputError(
            f"--effective_batch {effective_batch} cannot be reached with {gpus} GPU(s) × per-device batch "
            f"{per_device_batch} = {per_step} per step (nearest reachable: {nearest})"
        )
    return effective_batch // per_step


def model_token_lengths(model_path: str | Path, examples: list[list[Turn]]) -> list[int]:
    from transformers import AutoTokenizer

    return token_lengths(AutoTokenizer.from_pretrained(str(model_path)), examples)


def deepspeed_config(gpus: int, parameters: float) -> str | None:
    if gpus <= 1:
        return None
    name = "ds_z3_offload_config.json" if parameters >= LARGE_MODEL_PARAMS else "ds_z3_config.json"
    return str(DEEPSPEED_DIR / name)


def step_schedule(examples: int, effective_batch: int, epochs: float) -> dict[str, int]:
    """The authors' rule: a log line every 1 % of the steps (at least one per step), evaluation and a
    checkpoint every 5 log lines; a run of a few dozen steps is evaluated and saved several times."""
    total_steps = max(1, math.ceil(examples / effective_batch) * math.ceil(epochs))
    logging_steps = max(1, total_steps // LOG_LINES_PER_RUN)
    save_steps = logging_steps * LOG_LINES_PER_CHECKPOINT
    return {"logging_steps": logging_steps, "save_steps": save_steps, "eval_steps": save_steps}


def model_slug(model_path: str | Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model_path).resolve().name.lower())


def _number(flag: str, value: Any, minimum: float = 0) -> float:
    """A finite real number ≥ `minimum` from a Fire argument (which may be any type), or a refusal."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise InputError(f"{flag}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _count(flag: str, value: Any, minimum: int = 1) -> int:
    """A whole number ≥ `minimum` from a Fire argument, or a refusal."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{flag}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _model_dir(model_path: str) -> Path:
    if not Path(model_path).is_dir():
        raise InputError(f"{model_path}: model directory not found")
    return Path(model_path)


def build_config(
    model_path: str,
    dataset: str,
    method: str = "rpo",
    gpus: int = 1,
    gamma: float = 0.05,
    dataset_dir: str = "data",
    finetuning_type: str = "lora",
    max_cutoff: int = 8192,
    template: str | None = None,
    output_dir: str | None = None,
    effective_batch: int | None = None,
    per_device_batch: int | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The training YAML content as a dict (see the module docstring for what is inferred); what the
    user should know about it is appended to `warnings`."""
    if method not in TRAIN_METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    gamma = _number("--gamma", gamma)
    if gpus == 0 and not isinstance(gpus, bool):
        raise InputError("--gpus: expected a whole number >= 1, got 0 (these are GPU configs; "
                         "to train on CPU start from conf/cpu/rpo.yaml)")
    gpus = _count("--gpus", gpus)
    _model_dir(model_path)
    per_device_batch = _count("--per_device_batch", per_device_batch or per_device_batch_for(model_path))
    if effective_batch is None:
        effective_batch = paper_effective_batch(model_path, per_device_batch)
    accumulation = gradient_accumulation(_count("--effective_batch", effective_batch), gpus, per_device_batch)
    examples = dataset_examples(dataset_dir, dataset)
    template = template or infer_template(model_path)
    cutoff = cutoff_len(model_token_lengths(model_path, examples), max_cutoff)
    epochs = 3.0

    config: dict[str, Any] = {
        "model_name_or_path": str(model_path),
        "trust_remote_code": True,
        "stage": "dpo" if method in ("rpo", "dpo") else method,
        "do_train": True,
        "finetuning_type": finetuning_type,
    }
    if finetuning_type == "lora":
        config.update({"lora_rank": 8, "lora_target": "all"})
    if method in ("rpo", "dpo"):
        config["pref_beta"] = 0.1
        config["pref_loss"] = "sigmoid"
    if method == "rpo":
        config["rpo_gamma"] = gamma
    if method == "kto":
        config["pref_beta"] = 0.1
    ds = deepspeed_config(gpus, estimate_parameters(model_path))
    if ds:
        config["deepspeed"] = ds
    train_examples = len(examples) - math.ceil(VAL_SIZE * len(examples))
    if effective_batch > train_examples and warnings is not None:
        warnings.append(
            f"effective batch {effective_batch} exceeds the {train_examples} training examples of {dataset} "
            f"(after the {VAL_SIZE:.0%} validation split): each epoch is one optimisation step on all of them; "
            "lower --effective_batch for more steps"
        )
    config.update(
        {
            "dataset": dataset,
            "dataset_dir": str(dataset_dir),
            "template": template,
            "cutoff_len": cutoff,
            "overwrite_cache": True,
            "preprocessing_num_workers": 16,
            "output_dir": output_dir or f"saves/{model_slug(model_path)}/{finetuning_type}/{method}",
            "plot_loss": True,
            "overwrite_output_dir": True,
            "save_only_model": False,
            "report_to": "none",
            "per_device_train_batch_size": per_device_batch,
            "gradient_accumulation_steps": accumulation,
            "learning_rate": 5.0e-5 if method == "sft" else 5.0e-4,
            "num_train_epochs": epochs,
            "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.1,
            "bf16": True,
            "ddp_timeout": 180000000,
            "val_size": VAL_SIZE,
            "per_device_eval_batch_size": per_device_batch,
            "eval_strategy": "steps",
            **step_schedule(train_examples, effective_batch, epochs),
        }
    )
    return config


def build_merge_config(
    model_path: str,
    adapter_path: str | None,
    template: str | None = None,
    export_dir: str | None = None,
    export_size: int = 5,
    export_device: str = "cpu",
) -> dict[str, Any]:
    """The `llamafactory-cli export` YAML that merges a LoRA adapter into its base model."""
    _model_dir(model_path)
    if not adapter_path or not (Path(adapter_path) / "adapter_config.json").is_file():
        raise InputError(f"--adapter_path: {adapter_path!r} is not a LoRA adapter directory (no adapter_config.json)")
    if export_device not in ("cpu", "auto"):
        raise InputError(f"--export_device: expected cpu or auto, got {export_device!r}")
    return {
        "model_name_or_path": str(model_path),
        "adapter_name_or_path": str(adapter_path),
        "template": template or infer_template(model_path),
        "trust_remote_code": True,
        "finetuning_type": "lora",
        "export_dir": export_dir or f"{Path(adapter_path).as_posix().rstrip('/')}_merged",
        "export_size": _count("--export_size", export_size),
        "export_device": export_device,
        "export_legacy_format": False,
    }


def _file_name_part(flag: str, value: str) -> str:
    """A name that goes into the default output file name: one path component, never `..`."""
    if not value or any(sep in value for sep in ("/", "\\", os.sep)) or value in (".", ".."):
        raise InputError(f"{flag}: {value!r} cannot be part of a file name in the output folder; pass --output")
    return value


def output_path(output_dir: str, output: str | None, default_name: str) -> Path:
    """Where to write: an absolute `--output` as given; a relative one, or the default name, inside
    `--output_dir`, which it may not escape (`../../x`). The folder must be a writable directory."""
    if output and Path(output).is_absolute():
        path = Path(output)
    else:
        folder = Path(output_dir).resolve()
        path = (folder / (output or default_name)).resolve()
        if not path.is_relative_to(folder):
            raise InputError(f"--output: {output!r} would be written outside the output folder {output_dir}")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent}: exists and is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{parent}: not writable")
            break
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def write_yaml(path: Path, header: str, config: dict[str, Any]) -> None:
    try:
        with atomic_write(path) as fh:
            fh.write(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    except OSError as err:
        raise InputError(f"{path}: cannot write ({err.strerror})") from None


@exit_on_input_error
def main(
    model_path: str,
    dataset: str | None = None,
    gpus: int = 1,
    method: str = "rpo",
    gamma: float = 0.05,
    dataset_dir: str = "data",
    output: str | None = None,
    output_dir: str = DEFAULT_OUTPUT_DIR,
    finetuning_type: str = "lora",
    max_cutoff: int = 8192,
    template: str | None = None,
    effective_batch: int | None = None,
    per_device_batch: int | None = None,
    adapter_path: str | None = None,
    export_dir: str | None = None,
    export_size: int = 5,
    export_device: str = "cpu",
) -> None:
    """Write the YAML and print the command that runs it."""
    if method not in METHODS:
        raise InputError(f"--method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "merge":
        config = build_merge_config(model_path, adapter_path, template, export_dir, export_size, export_device)
        path = output_path(output_dir, output, f"{model_slug(model_path)}_merge.yaml")
        header = f"# Generated by src/utils/generate_conf_file.py: merge {adapter_path} into {model_path}.\n"
        write_yaml(path, header, config)
        print(f"wrote {path} (export to {config['export_dir']})")
        print(f"llamafactory-cli export {path}")
        return
    if dataset is None or dataset == "":
        raise InputError("--dataset: required for training methods (a dataset name from dataset_info.json)")
    dataset = str(dataset)
    default_name = f"{model_slug(model_path)}_{_file_name_part('--method', method)}_{_file_name_part('--dataset', dataset)}.yaml"
    path = output_path(output_dir, output, default_name)
    warnings: list[str] = []
    config = build_config(model_path, dataset, method, gpus, gamma, dataset_dir, finetuning_type, max_cutoff, template,
                          effective_batch=effective_batch, per_device_batch=per_device_batch, warnings=warnings)
    effective = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] * gpus
    header = (
        f"# Generated by src/utils/generate_conf_file.py for {model_path} on dataset {dataset}.\n"
        f"# Effective batch {effective} = {gpus} GPU(s) x per-device batch {config['per_device_train_batch_size']}"
        f" x gradient accumulation {config['gradient_accumulation_steps']}; {VAL_SIZE:.0%} of the data is held out"
        " for evaluation.\n"
    )
    if method == "rpo":
        header += "# rpo_gamma sits inside pref_beta: the paper's Eq. 4 gamma equals pref_beta * rpo_gamma.\n"
    write_yaml(path, header, config)
    launcher = "FORCE_TORCHRUN=1 " if gpus > 1 else ""
    print(f"wrote {path} (template {config['template']}, cutoff_len {config['cutoff_len']}, "
          f"effective batch {effective})")
    print(f"{launcher}llamafactory-cli train {path}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
