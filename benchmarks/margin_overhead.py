"""What the margin patch costs: RPO (margin column + rpo_gamma) vs unpatched DPO (RPO_PATCH_DISABLE=1).

One YAML for both arms (with the patch disabled LLaMA-Factory drops `rpo_gamma` and ignores the
margin column): same tiny model, same pairs, same steps and seed; runs alternate so machine load
hits both alike.
Train time is the trainer's own `train_runtime`; peak memory is the training process's max RSS on
CPU, and the peak of PyTorch's CUDA allocator with `--device cuda` (bf16).

    .venv/bin/python benchmarks/margin_overhead.py [--repetitions 3] [--steps 40] [--hidden 256]
    python benchmarks/margin_overhead.py --device cuda --hidden 2048 --layers 8 --pairs 2000 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from rpo.utils.tiny_model import build_tiny_model


def write_data(data_dir: Path, pairs: int) -> None:
    rows = []
    for i in range(pairs):
        rows.append(
            {
                "conversations": [
                    {"from": "system", "value": "Follow every rule. " + " ".join(f"Rule {k}: mention item {k}." for k in range(8))},
                    {"from": "human", "value": f"Please describe item {i} in some detail."},
                ],
                "chosen": {"from": "gpt", "value": " ".join(f"item {i} mentions item {k}." for k in range(10))},
                "rejected": {"from": "gpt", "value": " ".join(f"item {i} ignores rule {k}, sadly." for k in range(10))},
                "margin": i % 6,
            }
        )
    (data_dir / "pairs.json").write_text(json.dumps(rows))
    columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "margin": "margin"}
    info = {"pairs": {"file_name": "pairs.json", "formatting": "sharegpt", "ranking": True, "columns": columns}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))


# Runs `llamafactory-cli train CONFIG` in this process, then prints its peak memory in MiB.
MEASURED_TRAIN = """
import resource, sys
import torch
from llamafactory.cli import main
sys.argv = ["llamafactory-cli", "train", sys.argv[1]]
main()
if torch.cuda.is_available():
    print(torch.cuda.max_memory_allocated() / 2**20)
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run_once(root: Path, name: str, rpo: bool, steps: int, device: str) -> tuple[float, float]:
    """One training run; returns (train_runtime seconds, peak memory MiB)."""
    config = {
        "model_name_or_path": str(root / "model"),
        "stage": "dpo",
        "do_train": True,
        "finetuning_type": "full",
        "pref_beta": 0.1,
        "dataset": "pairs",
        "dataset_dir": str(root / "data"),
        "template": "chatml",
        "cutoff_len": 256,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(root / "runs" / name),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-4,
        "max_steps": steps,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": device == "cpu",
        "bf16": device == "cuda",
        "dataloader_num_workers": 0,
        "seed": 0,
        "rpo_gamma": 0.05,
    }
    config_path = root / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RPO_PATCH_DISABLE": "0" if rpo else "1"}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED_TRAIN, str(config_path)], env=env, capture_output=True, text=True, check=True,
    )
    peak_mib = float(proc.stdout.strip().splitlines()[-1])
    results = json.loads((root / "runs" / name / "train_results.json").read_text())
    return float(results["train_runtime"]), peak_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        write_data(root / "data", args.pairs)
        build_tiny_model(
            root / "model", vocab_size=1024, hidden_size=args.hidden, num_layers=args.layers,
            num_heads=args.hidden // 64, intermediate_size=args.hidden * 4,
        )
        times: dict[str, list[float]] = {"dpo": [], "rpo": []}
        peaks: dict[str, list[float]] = {"dpo": [], "rpo": []}
        for rep in range(args.repetitions):
            order = ("dpo", "rpo") if rep % 2 == 0 else ("rpo", "dpo")
            for method in order:
                runtime, peak = run_once(root, f"{method}{rep}", method == "rpo", args.steps, args.device)
                times[method].append(runtime)
                peaks[method].append(peak)
                print(f"rep {rep} {method}: train_runtime {runtime:.2f} s, peak memory {peak:.0f} MiB", flush=True)

    time_ratio = statistics.median(times["rpo"]) / statistics.median(times["dpo"])
    memory_ratio = statistics.median(peaks["rpo"]) / statistics.median(peaks["dpo"])
    print(f"median train time: DPO {statistics.median(times['dpo']):.2f} s, RPO {statistics.median(times['rpo']):.2f} s")
    print(f"median peak memory ({'CUDA allocator' if args.device == 'cuda' else 'RSS'}): DPO {statistics.median(peaks['dpo']):.0f} MiB, RPO {statistics.median(peaks['rpo']):.0f} MiB")
    print(f"train-time ratio RPO/DPO: {time_ratio:.3f} (target <= 1.02)")
    print(f"peak-memory ratio RPO/DPO: {memory_ratio:.3f} (target <= 1.01)")


if __name__ == "__main__":
    main()
