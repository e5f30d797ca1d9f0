"""The margin patch end to end, through the real `llamafactory-cli` on a tiny model built here.

At the first step the policy equals the reference, so Δ = 0 and the loss is known in closed form:
mean softplus(β·γ·g) over the batch (log 2 without a margin).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from rpo.utils.tiny_model import build_tiny_model
from rpo_llamafactory.errors import RPOError

BIN = Path(sys.executable).parent
BETA = 0.1


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _pairs(margins: list[float | None] | None, n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "conversations": [
                {"from": "system", "value": "Answer briefly. Never use commas."},
                {"from": "human", "value": f"Tell me about item {i}."},
            ],
            "chosen": {"from": "gpt", "value": f"Item {i} is small and blue" + " indeed" * (i % 3)},
            "rejected": {"from": "gpt", "value": f"Item {i}, sadly, is large, red, and loud" + " yes" * (i % 2)},
        }
        if margins is not None and margins[i] != "absent":
            row["margin"] = margins[i]
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rpo_patch")
    build_tiny_model(root / "model")
    data = root / "data"
    data.mkdir()
    datasets = {
        "graded": _pairs(list(range(8))),
        "constant4": _pairs([4] * 8),
        "plain": _pairs(None),
        "negative": _pairs([1, 2, 3, -1, 0, 0, 0, 0]),
        "nan": _pairs([1, 2, float("nan"), 0, 0, 0, 0, 0]),
        "text": _pairs([1, "two", 3, 0, 0, 0, 0, 0]),
        "missing": _pairs([1, 2, 3, 4, 5, "absent", 0, 0]),
        "infinite": _pairs([1, 2, 3, 0, float("inf"), 0, 0, 0]),  # json writes Infinity, which it reads back
        "huge": _pairs([1, 1e308, 3, 0, 0, 0, 0, 0]),
    }
    info = {}
    for name, rows in datasets.items():
        (data / f"{name}.json").write_text(json.dumps(rows))
        columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
        if name != "plain":
            columns["margin"] = "margin"
        info[name] = {"file_name": f"{name}.json", "formatting": "sharegpt", "ranking": True, "columns": columns}
    info["unmapped"] = {**info["plain"], "columns": {**info["plain"]["columns"], "margin": "score"}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    return root


def _config(workspace: Path, output: str, **overrides) -> dict:
    config = {
        "model_name_or_path": str(workspace / "model"),
        "stage": "dpo",
        "do_train": True,
        "finetuning_type": "full",
        "pref_beta": BETA,
        "dataset": "graded",
        "dataset_dir": str(workspace / "data"),
        "template": "chatml",
        "cutoff_len": 128,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(workspace / "runs" / output),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 8,
        "learning_rate": 1.0e-3,
        "max_steps": 1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "seed": 7,
    }
    config.update(overrides)
    return config


def logged_steps(config: dict) -> list:
    """The training steps a finished run logged (none when it failed before writing its state)."""
    state_path = Path(config["output_dir"]) / "trainer_state.json"
    return [h for h in json.loads(state_path.read_text())["log_history"] if "loss" in h] if state_path.exists() else []


def train(workspace: Path, output: str, env: dict | None = None, **overrides) -> tuple[subprocess.CompletedProcess, list]:
    """Run `llamafactory-cli train` and return the process and the logged training steps."""
    config = _config(workspace, output, **overrides)
    config_path = workspace / f"{output}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(
        [str(BIN / "llamafactory-cli"), "train", str(config_path)],
        cwd=workspace, env=full_env, capture_output=True, text=True, timeout=600, check=False,
    )
    return proc, logged_steps(config) if proc.returncode == 0 else []


RUN_EXP_EACH = """
import json, sys
from llamafactory.train.tuner import run_exp
for config in json.load(sys.stdin):
    run_exp(config)
"""


def train_through_python_api(workspace: Path, names: list[str]) -> dict[str, tuple[subprocess.CompletedProcess, list]]:
    """Run each named configuration with LLaMA-Factory's Python API (`run_exp`), one after the other in
    one fresh process with the patch on; returns, per name, that process and the run's logged steps."""
    configs = {name: _config(workspace, name, **RUNS[name][1]) for name in names}
    proc = subprocess.run([sys.executable, "-c", RUN_EXP_EACH], input=json.dumps(list(configs.values())),
                          cwd=workspace, capture_output=True, text=True, timeout=600, check=False)
    return {name: (proc, logged_steps(config)) for name, config in configs.items()}


PLAIN_FOUR_STEPS = {"dataset": "plain", "max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 5e-3}
RUNS: dict[str, tuple[dict, dict]] = {  # name: (environment, config overrides)
    "graded": ({}, {"rpo_gamma": 0.5}),
    "smoothing": ({}, {"rpo_gamma": 0.5, "dpo_label_smoothing": 0.1}),
    "log2_graded": ({}, {"rpo_gamma": 0.0}),
    "plain_off": ({"RPO_PATCH_DISABLE": "1"}, PLAIN_FOUR_STEPS),
    "plain_on": ({}, PLAIN_FOUR_STEPS),
    "plain_gamma": ({}, {**PLAIN_FOUR_STEPS, "rpo_gamma": 0.5}),
    "simpo": ({}, {"pref_loss": "simpo", "rpo_gamma": 0.5, "simpo_gamma": 0.5}),
    "refused": ({}, {"dataset": "negative", "rpo_gamma": 0.5}),
    "misspelt": ({}, {"rpo_gama": 0.05}),
    "ab_off": ({"RPO_PATCH_DISABLE": "1"}, {"rpo_gamma": 0.5}),
    "ipo_plain": ({}, {"dataset": "plain", "pref_loss": "ipo", "rpo_gamma": 0.5}),
    "torchrun": ({"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"},
                 {"dataset": "constant4", "rpo_gamma": 0.5, "per_device_train_batch_size": 4}),
}
"""Every training the tests below read, made by the `trained` fixture."""
PYTHON_API_RUNS = ["graded", "smoothing", "log2_graded", "plain_on", "plain_gamma", "simpo", "ipo_plain"]
"""Runs that need nothing of the command line: one process trains them all through `run_exp`. The others
go through `llamafactory-cli` (its one-line refusals, its YAML key check, RPO_PATCH_DISABLE set at start,
torchrun), the patch-off run beside the patch-on runs it must equal bit for bit."""


@pytest.fixture(scope="module")
def trained(workspace) -> dict[str, tuple[subprocess.CompletedProcess, list]]:
    cli_runs = sorted((name for name in RUNS if name not in PYTHON_API_RUNS), key=lambda name: name != "torchrun")
    with ThreadPoolExecutor(max_workers=2) as pool:
        python_api = pool.submit(train_through_python_api, workspace, PYTHON_API_RUNS)
        cli = dict(zip(cli_runs, pool.map(lambda name: train(workspace, name, RUNS[name][0], **RUNS[name][1]),
                                          cli_runs)))
        return {**python_api.result(), **cli}


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_first_step_loss_is_mean_softplus_of_margin(trained):
    """Through LLaMA-Factory's Python API (`run_exp`), as a script that trains several configurations would."""
    gamma = RUNS["graded"][1]["rpo_gamma"]
    proc, steps = trained["graded"]
    _ok(proc)
    expected = sum(softplus(BETA * gamma * g) for g in range(8)) / 8
    assert steps[0]["loss"] == pytest.approx(expected, abs=1e-4)
    assert steps[0]["rpo/margin_mean"] == pytest.approx(3.5)


def test_first_step_loss_with_label_smoothing(trained):
    gamma, eps = RUNS["smoothing"][1]["rpo_gamma"], RUNS["smoothing"][1]["dpo_label_smoothing"]
    proc, steps = trained["smoothing"]
    _ok(proc)
    expected = sum((1 - eps) * softplus(BETA * gamma * g) + eps * softplus(-BETA * gamma * g) for g in range(8)) / 8
    assert steps[0]["loss"] == pytest.approx(expected, abs=1e-4)


def test_first_step_loss_is_log2_with_gamma_zero(trained):
    proc, steps = trained["log2_graded"]
    _ok(proc)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_no_margin_column_is_bit_identical_to_unpatched(trained):
    """Without a margin column, the patched trainer with any γ is LLaMA-Factory's, bit for bit (and its
    first step, Δ = 0, costs log 2)."""
    (proc_off, steps_off), (proc_on, steps_on), (proc_gamma, steps_gamma) = (
        trained[name] for name in ("plain_off", "plain_on", "plain_gamma"))
    for proc in (proc_off, proc_on, proc_gamma):
        _ok(proc)
    losses_off = [s["loss"] for s in steps_off]
    assert len(losses_off) == 4 and len(set(losses_off)) > 1  # training moved
    assert [s["loss"] for s in steps_on] == losses_off
    assert [s["loss"] for s in steps_gamma] == losses_off
    assert steps_gamma[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert "rpo/margin_mean" not in steps_off[0]


def test_simpo_with_margin_trains_and_logs_margin(trained):
    proc, steps = trained["simpo"]
    _ok(proc)
    assert steps[0]["rpo/margin_mean"] == pytest.approx(3.5)
    assert math.isfinite(steps[0]["loss"])


def _prepare_dpo(workspace: Path, **overrides) -> None:
    """What `llamafactory-cli train` does before the weights load, in this process and with the patch that
    the start-up hook installed: read the arguments, fit the template to the tokenizer, load, align and
    tokenise the dataset, and create the DPO trainer (without a model: the refusals come first)."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from llamafactory.model import load_tokenizer
    from llamafactory.train.dpo.trainer import CustomDPOTrainer
    from transformers import Seq2SeqTrainingArguments

    config = _config(workspace, "prepared", **overrides)
    fields = {cls: {f.name for f in dataclasses.fields(cls)}
              for cls in (ModelArguments, DataArguments, Seq2SeqTrainingArguments, FinetuningArguments)}
    model_args, data_args, training_args, finetuning_args = (
        cls(**{key: value for key, value in config.items() if key in names}) for cls, names in fields.items()
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, stage="rm", **tokenizer_module)
    CustomDPOTrainer(model=None, ref_model=None, args=training_args, finetuning_args=finetuning_args,
                     **dataset_module)
    raise AssertionError("no refusal")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pref_loss": "ipo", "rpo_gamma": 0.5},
         ("rpo_gamma > 0 with a margin column supports pref_loss in ['sigmoid', 'simpo'], got pref_loss: ipo "
          "(set rpo_gamma: 0 or change pref_loss)")),
        ({"rpo_gamma": -0.1}, "rpo_gamma must be a finite number >= 0, got -0.1"),
        ({"dataset": "negative", "rpo_gamma": 0.5},
         "dataset 'negative' (negative.json): row 3: margin column 'margin' is negative (-1)"),
        ({"dataset": "nan", "rpo_gamma": 0.5}, "dataset 'nan' (nan.json): row 2: margin column 'margin' is NaN"),
        ({"dataset": "text", "rpo_gamma": 0.5},
         "dataset 'text' (text.json): row 1: margin column 'margin' is not a number ('two')"),
        ({"dataset": "missing", "rpo_gamma": 0.5},
         "dataset 'missing' (missing.json): row 5: margin column 'margin' is missing"),
        ({"dataset": "infinite", "rpo_gamma": 0.5},
         "dataset 'infinite' (infinite.json): row 4: margin column 'margin' is not finite (inf)"),
        ({"dataset": "huge", "rpo_gamma": 0.5},
         ("dataset 'huge' (huge.json): row 1: margin column 'margin' is 1e+308, above the bound 1000 "
          "(a margin counts failed constraints)")),
        ({"dataset": "unmapped", "rpo_gamma": 0.05},
         ("dataset 'unmapped' (plain.json): dataset_info.json maps margin to column 'score', which the data "
          "does not have (columns: conversations, chosen, rejected)")),
    ],
)
def test_refusals_name_the_problem(workspace, overrides, message):
    with pytest.raises(RPOError) as refused:
        _prepare_dpo(workspace, **overrides)
    assert str(refused.value) == message


def test_cli_prints_a_refusal_as_one_line(trained):
    """The refusals above, through the CLI: one `[rpo] error:` line, no traceback, a non-zero exit."""
    proc, _ = trained["refused"]
    assert proc.returncode != 0
    assert "[rpo] error: dataset 'negative' (negative.json): row 3: margin column 'margin' is negative (-1)\n" in (
        proc.stderr)
    assert "Traceback" not in proc.stderr


def test_misspelt_key_names_the_nearest_valid_one(workspace, trained):
    proc, _ = trained["misspelt"]
    assert proc.returncode != 0
    message = f"[rpo] error: {workspace / 'misspelt.yaml'}: unknown key 'rpo_gama' (did you mean 'rpo_gamma'?)"
    assert [line for line in proc.stderr.splitlines() if "rpo_gama" in line] == [message]
    assert "Traceback" not in proc.stderr


def test_template_tokens_outside_the_vocabulary_are_refused(workspace):
    """The tiny tokenizer speaks chatml; llama3's stop words are new tokens past its embedding. The model
    loader refuses before any weight loads (upstream trains into a bare IndexError)."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from llamafactory.model import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=str(workspace / "model"))
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    get_template_and_fix_tokenizer(tokenizer, DataArguments(template="llama3"))
    vocabulary = json.loads((workspace / "model" / "config.json").read_text())["vocab_size"]
    with pytest.raises(RPOError) as refused:
        load_model(tokenizer, model_args, FinetuningArguments(stage="dpo"), is_trainable=True)
    assert str(refused.value) == (
        f"template 'llama3' adds tokens that {workspace / 'model'} does not have "
        f"(<|eot_id|>, <|eom_id|>; ids from {vocabulary}, vocabulary size {vocabulary}): use the template that "
        "matches the model's tokenizer, or set resize_vocab: true to train new embeddings"
    )


def test_disabled_patch_accepts_rpo_gamma_and_trains_without_margin(trained):
    """One YAML serves both arms of an A/B run: with the patch off, rpo_gamma is dropped with a warning."""
    proc, steps = trained["ab_off"]
    _ok(proc)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("[rpo]")]
    assert warnings == [
        "[rpo] warning: RPO_PATCH_DISABLE=1: rpo_gamma ignored, the margin is off (plain LLaMA-Factory 0.9.5 training)"
    ]
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # graded margins, but no margin applied
    assert "rpo/margin_mean" not in steps[0]


def test_other_losses_without_margin_still_train(trained):
    proc, _ = trained["ipo_plain"]
    _ok(proc)


def test_torchrun_workers_apply_the_margin(trained):
    gamma = RUNS["torchrun"][1]["rpo_gamma"]
    proc, steps = trained["torchrun"]
    _ok(proc)
    assert "world size: 2" in proc.stderr + proc.stdout
    assert steps[0]["loss"] == pytest.approx(softplus(BETA * gamma * 4), abs=1e-4)
    assert steps[0]["rpo/margin_mean"] == pytest.approx(4.0)


def test_refuses_an_unsupported_llamafactory_version(tmp_path):
    fake = tmp_path / "llamafactory"
    (fake / "extras").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "extras" / "__init__.py").write_text("")
    (fake / "extras" / "env.py").write_text('VERSION = "0.9.9"\n')
    proc = subprocess.run(
        [sys.executable, "-c", "import llamafactory.extras.env"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode != 0
    assert "supports llamafactory==0.9.5 but llamafactory==0.9.9 is installed" in proc.stderr


def test_trainer_is_importable_first_and_still_installed():
    """Tools can import the trainer class before llamafactory; training then still uses it."""
    script = (
        "from rpo_llamafactory.trainer import MarginDPOTrainer\n"
        "from llamafactory.train.dpo.trainer import CustomDPOTrainer\n"
        "from rpo_llamafactory.hook import PATCH_POINTS\n"
        "from rpo_llamafactory import patch\n"
        "print(CustomDPOTrainer is MarginDPOTrainer, MarginDPOTrainer.__module__,\n"
        "      PATCH_POINTS['llamafactory.train.dpo.trainer'] is patch.patch_dpo_trainer)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True rpo_llamafactory.trainer True"


def test_rpo_gamma_help_sets_it_apart_from_trl_rpo_alpha():
    from llamafactory.hparams import FinetuningArguments

    help_text = FinetuningArguments.__dataclass_fields__["rpo_gamma"].metadata["help"]
    assert "Unrelated to TRL's `rpo_alpha`" in help_text and "SPEC" not in help_text


def test_disable_switch_leaves_llamafactory_untouched():
    from llamafactory.hparams import FinetuningArguments

    assert "rpo_gamma" in FinetuningArguments.__dataclass_fields__  # this process: the patch is on
    script = "import llamafactory.hparams as h; print('rpo_gamma' in h.FinetuningArguments.__dataclass_fields__)"
    off = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "RPO_PATCH_DISABLE": "1"},
    )
    assert off.stdout.strip().splitlines()[-1] == "False"
