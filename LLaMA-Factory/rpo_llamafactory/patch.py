"""The patches, one per llamafactory module, applied by `rpo_llamafactory.hook` right after import.

Data flow of the margin g:
  dataset_info.json `"columns": {"margin": ...}` → DatasetAttr.margin (parser)
  → `_margin` beside LLaMA-Factory's underscore columns, validated (converter)
  → `margin` per tokenised pair (pairwise processor) → `batch["margin"]` (DPO collator)
  → −log σ(β·(Δ − γ·g)) with γ = `rpo_gamma` (DPO trainer, via `rpo_llamafactory.loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from types import ModuleType
from typing import Any

from rpo_llamafactory.errors import RPOError, install_excepthook

SUPPORTED_LLAMAFACTORY = "0.9.5"
DEFAULT_MARGIN_COLUMN = "margin"
MARGIN_LOSSES = ("sigmoid", "simpo")


def check_version(env_module: ModuleType) -> None:
    """Refuse a llamafactory release the patch was not built for."""
    install_excepthook()
    found = getattr(env_module, "VERSION", None) or installed_version("llamafactory")
    if found != SUPPORTED_LLAMAFACTORY:
        raise RPOError(
            f"rpo_llamafactory supports llamafactory=={SUPPORTED_LLAMAFACTORY} but llamafactory=={found} is "
            "installed; install the pinned release or set RPO_PATCH_DISABLE=1"
        )


def patch_finetuning_args(module: ModuleType) -> None:
    """Add the YAML key `rpo_gamma` (HfArgumentParser only accepts declared fields)."""
    base = module.FinetuningArguments

    @dataclass
    class FinetuningArguments(base):
        rpo_gamma: float = field(
            default=0.0,
            metadata={
                "help": "RPO adaptive-margin weight γ ≥ 0: loss = −log σ(β·(Δ − γ·g)); 0 trains plain DPO. "
                "γ sits inside β: the paper's Eq. 4 γ equals pref_beta × rpo_gamma."
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
    """Read the margin column name from `dataset_info.json` (default `margin`) and keep each
    dataset's `dataset_info.json` name for error messages."""
    original_join = module.DatasetAttr.join
    original_get_dataset_list = module.get_dataset_list

    def join(self: Any, attr: dict[str, Any]) -> None:
        original_join(self, attr)
        self.margin = attr.get("columns", {}).get("margin", DEFAULT_MARGIN_COLUMN)

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
        output["_margin"] = float(example[self.column]) if self.column else 0.0
        return output


def validate_margins(values: list[Any], dataset_label: str, column: str) -> None:
    """Refuse missing, non-numeric, NaN or negative margins, naming the dataset and row."""
    for row, value in enumerate(values):
        if value is None:
            problem = "is missing"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problem = f"is not a number ({value!r})"
        elif math.isnan(value):
            problem = "is NaN"
        elif value < 0:
            problem = f"is negative ({value})"
        else:
            continue
        raise RPOError(f"dataset {dataset_label}: row {row}: margin column {column!r} {problem}")


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
            column = getattr(dataset_attr, "margin", DEFAULT_MARGIN_COLUMN)
            present = column in next(iter(dataset)).keys()
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
    column = getattr(dataset_attr, "margin", DEFAULT_MARGIN_COLUMN)
    with open(path, encoding="utf-8") as fh:
        try:
            rows = json.load(fh) if path.endswith(".json") else [json.loads(line) for line in fh if line.strip()]
        except ValueError:
            return
    if isinstance(rows, list) and any(isinstance(row, dict) and column in row for row in rows):
        validate_margins([row.get(column) for row in rows], _dataset_label(dataset_attr), column)


def patch_pairwise_processor(module: ModuleType) -> None:
    """Emit each pair's margin beside its token ids."""
    base = module.PairwiseDatasetProcessor

    class PairwiseDatasetProcessor(base):
        def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
            model_inputs = base.preprocess_dataset(self, examples)
            if "_margin" in examples:
                kept = [  # the same validity rule upstream uses to drop examples
                    margin
                    for prompt, response, margin in zip(examples["_prompt"], examples["_response"], examples["_margin"])
                    if len(prompt) % 2 == 1 and len(response) >= 2
                ]
                assert len(kept) == len(model_inputs["chosen_input_ids"]), "margin/example misalignment"
                model_inputs["margin"] = kept
            return model_inputs

    PairwiseDatasetProcessor.__module__ = base.__module__
    module.PairwiseDatasetProcessor = PairwiseDatasetProcessor


def patch_dpo_workflow(module: ModuleType) -> None:
    """Give the DPO workflow (only) a collator that batches the margins."""
    from rpo_llamafactory.trainer import margin_collator_class

    module.PairwiseDataCollatorWithPadding = margin_collator_class(module.PairwiseDataCollatorWithPadding)


def patch_dpo_trainer(module: ModuleType) -> None:
    """Swap in the DPO trainer that applies the margin."""
    from rpo_llamafactory.trainer import margin_trainer_class

    module.CustomDPOTrainer = margin_trainer_class(module.CustomDPOTrainer)
