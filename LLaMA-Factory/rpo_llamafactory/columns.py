"""The names the margin travels under, and the flag that asks for its trainer, defined once for the
whole patch."""

DATASET_MARGIN_COLUMN = "margin"
"""The data column read when `dataset_info.json` maps none (`"columns": {"margin": ...}` overrides it)."""

ALIGNED_MARGIN_COLUMN = "_margin"
"""The margin beside LLaMA-Factory's underscore columns (`_prompt`, `_response`, ...) after alignment."""

MARGIN_FEATURE = "margin"
"""The margin of each tokenised pair and of each batch (`batch["margin"]`)."""

MARGIN_TRAINER_WANTED = "rpo_margin_trainer_wanted"
"""Set (True) on llamafactory's DPO trainer module by the full patch, before it imports
`rpo_llamafactory.trainer`; that module swaps in `MarginDPOTrainer` only where it finds the flag,
so importing it without the patch (or under `RPO_PATCH_DISABLE=1`) leaves LLaMA-Factory as released."""
