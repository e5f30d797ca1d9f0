"""The patches, one per llamafactory module, applied by `rpo_llamafactory.hook` right after import.

Data flow of the margin g:
  dataset_info.json `"columns": {"margin": ...}` → DatasetAttr.margin (parser)
  → `_margin` beside LLaMA-Factory's underscore columns, validated (converter)
  → `margin` per tokenised pair (pairwise processor) → `batch["margin"]` (DPO collator)
  → −log σ(β·(Δ − γ·g)) with γ = `rpo_gamma` (DPO trainer, via `rpo_llamafactory.loss`).
Besides the margin, the patch refuses at start-up what upstream would train through silently or
fail on mid-run with a traceback: unknown config keys and templates whose tokens the model lacks.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rpo_llamafactory.columns import (
    ALIGNED_MARGIN_COLUMN,
    DATASET_MARGIN_COLUMN,
    MARGIN_FEATURE,
    MARGIN_TRAINER_WANTED,
)
from rpo_llamafactory.errors import RPOError, install_excepthook

SUPPORTED_LLAMAFACTORY = "0.9.5"
MAX_MARGIN = 1000
"""Largest margin accepted. A margin counts the constraints the rejected response fails, so anything
near this is a data error; far larger finite values (1e308) would overflow once multiplied or cast."""
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def check_version(env_module: ModuleType) -> None:
    """Refuse a llamafactory release the patch was not built for."""
    install_excepthook()
    from importlib.metadata import version as installed_version

    found = getattr(env_module, "VERSION", None) or installed_version("llamafactory")
    if found != SUPPORTED_LLAMAFACTORY:
        raise RPOError(
            f"rpo_llamafactory supports llamafactory=={SUPPORTED_LLAMAFACTORY} but llamafactory=={found} is "
            "installed; install the pinned release or set RPO_PATCH_DISABLE=1"
        )


def _config_source(args: Any) -> str:
    """How to name the config in a message: the YAML/JSON file given on the command line, if any
    (`llamafactory-cli train X.yaml` reads it before parsing, so `args` is already its content)."""
    if not isinstance(args, list) and len(sys.argv) > 1 and sys.argv[1].endswith(CONFIG_SUFFIXES):
        return sys.argv[1]
    return "config"


def _argument_names(parser: Any) -> list[str]:
    return [f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init]


def unknown_key_message(unknown: list[str], known: list[str], source: str) -> str:
    """One line naming each unknown key and the nearest known one."""
    import difflib

    described = []
    for key in unknown:
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        described.append(f"{key!r} (did you mean {nearest[0]!r}?)" if nearest else repr(key))
    noun = "key" if len(unknown) == 1 else "keys"
    return f"{source}: unknown {noun} {', '.join(described)}"


HUB_RESERVED_OWNERS = {"models", "datasets", "spaces", "docs", "api"}
"""First path parts that the Hugging Face Hub keeps for its own pages: `models/X` is never a hub id."""


def looks_local(name: str) -> bool:
    """Whether `model_name_or_path` names a folder on this machine rather than a hub repository
    (`owner/name` or a bare `name`)."""
    if name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") >= 2:
        return True
    owner = name.split("/", 1)[0]
    return "/" in name and (owner in HUB_RESERVED_OWNERS or Path(owner).is_dir())


def model_path_problem(name: Any) -> str | None:
    """Why `model_name_or_path` cannot be loaded, when that is known before loading: a local-looking
    path that does not exist or holds no model, or (with HF_HUB_OFFLINE=1) a hub id not in the cache."""
    if not isinstance(name, str) or not name:
        return None
    path = Path(name).expanduser()
    fix = (f"build a tiny one with `python src/utils/tiny_model.py {name}`, or download one, e.g. "
           f"`hf download Qwen/Qwen2.5-0.5B-Instruct --local-dir {name}`")
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"model_name_or_path {name!r} is a folder without a model (no config.json): {fix}"
        return None
    if looks_local(name):
        return f"model_name_or_path {name!r} does not exist: {fix}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return (f"model_name_or_path {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                    f"is set: download it first, or give a local folder")
    return None


def patch_arg_parser(module: ModuleType) -> None:
    """Refuse unknown config keys in one line that names the nearest valid key (upstream: a traceback),
    and a model path that does not exist (upstream: a minute of hub retries, then a traceback)."""
    install_excepthook()
    original_parse_args = module._parse_args

    def _parse_args(parser: Any, args: Any = None, allow_extra_keys: bool = False) -> tuple[Any, ...]:
        source = _config_source(args)
        args = module.read_args(args)
        if isinstance(args, dict) and not allow_extra_keys:
            known = _argument_names(parser)
            unknown = sorted(set(args) - set(known))
            if unknown:
                raise RPOError(unknown_key_message(unknown, known, source))
        if isinstance(args, dict) and (problem := model_path_problem(args.get("model_name_or_path"))):
            raise RPOError(f"{source}: {problem}")
        return original_parse_args(parser, args, allow_extra_keys)

    module._parse_args = _parse_args


def ignore_rpo_gamma(module: ModuleType) -> None:
    """With the patch disabled, drop `rpo_gamma` from the config (one warning) instead of refusing it."""
    original_parse_args = module._parse_args
    warned = False

    def _parse_args(parser: Any, args: Any = None, allow_extra_keys: bool = False) -> tuple[Any, ...]:
        nonlocal warned
        args = module.read_args(args)
        wants_finetuning_args = any(dtype.__name__ == "FinetuningArguments" for dtype in parser.dataclass_types)
        if isinstance(args, dict) and "rpo_gamma" in args and wants_finetuning_args:
            args = {key: value for key, value in args.items() if key != "rpo_gamma"}
            if not warned:
                print(
                    f"[rpo] warning: RPO_PATCH_DISABLE=1: rpo_gamma ignored, the margin is off "
                    f"(plain LLaMA-Factory {SUPPORTED_LLAMAFACTORY} training)",
                    file=sys.stderr,
                )
                warned = True
        return original_parse_args(parser, args, allow_extra_keys)

    module._parse_args = _parse_args


def patch_finetuning_args(module: ModuleType) -> None:
    """Add the YAML key `rpo_gamma` (HfArgumentParser only accepts declared fields)."""
    base = module.FinetuningArguments

    @dataclass
    class FinetuningArguments(base):
        rpo_gamma: float = field(
            default=0.0,
            metadata={
                "help": "RPO (Reverse Preference Optimization) adaptive-margin weight γ ≥ 0: "
                "loss = −log σ(β·(Δ − γ·g)) with g the pair's margin column; 0 trains plain DPO. "
                "γ sits inside β: the paper's Eq. 4 γ equals pref_beta × rpo_gamma. Unrelated to TRL's "
                "`rpo_alpha`, which belongs to a different \"RPO\" (an NLL term on the chosen response)."
            },
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            if not (isinstance(self.rpo_gamma, (int, float)) and math.isfinite(self.rpo_gamma) and self.rpo_gamma >= 0):
                raise RPOError(f"rpo_gamma must be a finite number >= 0, got {self.rpo_gamma!r}")

    FinetuningArguments.__module__ = base.__module__
    FinetuningArguments.__doc__ = base.__doc__
    module.FinetuningArguments = FinetuningArguments


def patch_dataset_attr(module: ModuleType) -> None:
    """Read the margin column name from `dataset_info.json` (default `margin`), remember whether the
    entry names one, and keep each dataset's `dataset_info.json` name for error messages."""
    original_join = module.DatasetAttr.join
    original_get_dataset_list = module.get_dataset_list

    def join(self: Any, attr: dict[str, Any]) -> None:
        original_join(self, attr)
        columns = attr.get("columns", {})
        self.margin = columns.get("margin", DATASET_MARGIN_COLUMN)
        self.margin_mapped = "margin" in columns

    def get_dataset_list(dataset_names: list[str] | None, dataset_dir: Any) -> list[Any]:
        dataset_list = original_get_dataset_list(dataset_names, dataset_dir)
        for name, dataset_attr in zip(dataset_names or [], dataset_list):
            dataset_attr.info_name = name
        return dataset_list

    module.DatasetAttr.join = join
    module.get_dataset_list = get_dataset_list


def _dataset_label(dataset_attr: Any) -> str:
    name = getattr(dataset_attr, "info_name", None)
    if name and name != dataset_attr.dataset_name:
        return f"{name!r} ({dataset_attr.dataset_name})"
    return repr(dataset_attr.dataset_name)


@dataclass
class MarginConverter:
    """Wraps a LLaMA-Factory converter so ranking examples keep their margin as `_margin`.

    A ranking dataset without a margin column gets g = 0 (plain DPO). Picklable for `num_proc`.
    """

    converter: Any
    column: str | None

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        output = self.converter(example)
        output[ALIGNED_MARGIN_COLUMN] = float(example[self.column]) if self.column else 0.0
        return output


def margin_problem(value: Any) -> str | None:
    """Why `value` cannot be a margin, or None when it can."""
    if value is None:
        return "is missing"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is not a number ({value!r})"
    if math.isnan(value):
        return "is NaN"
    if math.isinf(value):
        return f"is not finite ({value})"
    if value < 0:
        return f"is negative ({value})"
    if value > MAX_MARGIN:
        return f"is {value:g}, above the bound {MAX_MARGIN} (a margin counts failed constraints)"
    return None


def validate_margins(values: list[Any], dataset_label: str, column: str) -> None:
    """Refuse missing, non-numeric, NaN, infinite, negative or absurdly large margins, naming the row."""
    for row, value in enumerate(values):
        problem = margin_problem(value)
        if problem:
            raise RPOError(f"dataset {dataset_label}: row {row}: margin column {column!r} {problem}")


def _column_names(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    return list(names) if names else list(next(iter(dataset)).keys())


def patch_converter(module: ModuleType) -> None:
    """Carry and validate the margin column through LLaMA-Factory's format alignment."""
    original_align = module.align_dataset
    original_get_converter = module.get_dataset_converter

    def get_dataset_converter(name: str, dataset_attr: Any, data_args: Any) -> Any:
        converter = original_get_converter(name, dataset_attr, data_args)
        if not dataset_attr.ranking:
            return converter
        return MarginConverter(converter, getattr(dataset_attr, "_rpo_margin_column", None))

    def align_dataset(dataset: Any, dataset_attr: Any, data_args: Any, training_args: Any) -> Any:
        if dataset_attr.ranking:
            column = getattr(dataset_attr, "margin", DATASET_MARGIN_COLUMN)
            names = _column_names(dataset)
            present = column in names
            if not present and getattr(dataset_attr, "margin_mapped", False):
                raise RPOError(
                    f"dataset {_dataset_label(dataset_attr)}: dataset_info.json maps margin to column {column!r}, "
                    f"which the data does not have (columns: {', '.join(names)})"
                )
            if present and not data_args.streaming:
                validate_margins(dataset[column], _dataset_label(dataset_attr), column)
            dataset_attr._rpo_margin_column = column if present else None
        return original_align(dataset, dataset_attr, data_args, training_args)

    module.get_dataset_converter = get_dataset_converter
    module.align_dataset = align_dataset


def patch_loader(loader: ModuleType) -> None:
    """Name the row when Arrow cannot load a ranking file because its margins mix types."""
    original_load = loader._load_single_dataset

    def _load_single_dataset(dataset_attr: Any, model_args: Any, data_args: Any, training_args: Any) -> Any:
        try:
            return original_load(dataset_attr, model_args, data_args, training_args)
        except Exception:
            if dataset_attr.ranking and dataset_attr.load_from == "file":
                _explain_margin_load_failure(dataset_attr, data_args)
            raise

    loader._load_single_dataset = _load_single_dataset


def _explain_margin_load_failure(dataset_attr: Any, data_args: Any) -> None:
    import json
    import os

    path = os.path.join(data_args.dataset_dir, dataset_attr.dataset_name)
    if not os.path.isfile(path):
        return
    column = getattr(dataset_attr, "margin", DATASET_MARGIN_COLUMN)
    with open(path, encoding="utf-8") as fh:
        try:
            rows = json.load(fh) if path.endswith(".json") else [json.loads(line) for line in fh if line.strip()]
        except ValueError:
            return
    if isinstance(rows, list) and any(isinstance(row, dict) and column in row for row in rows):
        validate_margins([row.get(column) for row in rows], _dataset_label(dataset_attr), column)


def patch_template(module: ModuleType) -> None:
    """Remember which template a tokenizer was fitted to and the tokens that added (for the model loader)."""
    original_fix = module.get_template_and_fix_tokenizer

    def get_template_and_fix_tokenizer(tokenizer: Any, data_args: Any) -> Any:
        before = len(tokenizer)
        template = original_fix(tokenizer, data_args)
        tokenizer.rpo_template_tokens = (data_args.template, list(range(before, len(tokenizer))))
        return template

    module.get_template_and_fix_tokenizer = get_template_and_fix_tokenizer


def _vocabulary_size(config: Any) -> int | None:
    size = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None)
    return int(size) if size else None


def patch_model_loader(module: ModuleType) -> None:
    """Refuse, before the weights load, a template whose special tokens lie beyond the model's embedding
    (upstream trains into a bare `IndexError` from the embedding lookup)."""
    original_load_model = module.load_model

    def load_model(tokenizer: Any, model_args: Any, *args: Any, **kwargs: Any) -> Any:
        template, added_ids = getattr(tokenizer, "rpo_template_tokens", (None, []))
        if added_ids and not model_args.resize_vocab:
            vocabulary = _vocabulary_size(module.load_config(model_args))
            missing = [token_id for token_id in added_ids if vocabulary is not None and token_id >= vocabulary]
            if missing:
                tokens = ", ".join(tokenizer.convert_ids_to_tokens(missing))
                raise RPOError(
                    f"template {template!r} adds tokens that {model_args.model_name_or_path} does not have "
                    f"({tokens}; ids from {missing[0]}, vocabulary size {vocabulary}): use the template that "
                    "matches the model's tokenizer, or set resize_vocab: true to train new embeddings"
                )
        return original_load_model(tokenizer, model_args, *args, **kwargs)

    module.load_model = load_model


def patch_pairwise_processor(module: ModuleType) -> None:
    """Emit each pair's margin beside its token ids."""
    base = module.PairwiseDatasetProcessor

    class PairwiseDatasetProcessor(base):
        def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
            model_inputs = base.preprocess_dataset(self, examples)
            if ALIGNED_MARGIN_COLUMN in examples:
                kept = [  # the same validity rule upstream uses to drop examples
                    margin
                    for prompt, response, margin in zip(
                        examples["_prompt"], examples["_response"], examples[ALIGNED_MARGIN_COLUMN]
                    )
                    if len(prompt) % 2 == 1 and len(response) >= 2
                ]
                assert len(kept) == len(model_inputs["chosen_input_ids"]), "margin/example misalignment"
                model_inputs[MARGIN_FEATURE] = kept
            return model_inputs

    PairwiseDatasetProcessor.__module__ = base.__module__
    module.PairwiseDatasetProcessor = PairwiseDatasetProcessor


def patch_dpo_workflow(module: ModuleType) -> None:
    """Give the DPO workflow (only) a collator that batches the margins."""
    from rpo_llamafactory.collator import MarginPairwiseDataCollator

    module.PairwiseDataCollatorWithPadding = MarginPairwiseDataCollator


def patch_dpo_trainer(module: ModuleType) -> None:
    """Swap in `rpo_llamafactory.trainer.MarginDPOTrainer`: mark the module as wanting it, then import
    the trainer module, which replaces this one's `CustomDPOTrainer` once its subclass is defined
    (see there why the swap is made on its side)."""
    setattr(module, MARGIN_TRAINER_WANTED, True)
    importlib.import_module("rpo_llamafactory.trainer")
