"""The names the margin travels under, defined once for the whole patch."""

DATASET_MARGIN_COLUMN = "margin"
"""The data column read when `dataset_info.json` maps none (`"columns": {"margin": ...}` overrides it)."""

ALIGNED_MARGIN_COLUMN = "_margin"
"""The margin beside LLaMA-Factory's underscore columns (`_prompt`, `_response`, ...) after alignment."""

MARGIN_FEATURE = "margin"
"""The margin of each tokenised pair and of each batch (`batch["margin"]`)."""
