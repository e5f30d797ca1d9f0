"""The DPO collator that batches each pair's margin beside its padded token ids."""

from __future__ import annotations

from typing import Any

import torch
from llamafactory.data.collator import PairwiseDataCollatorWithPadding

from rpo_llamafactory.columns import MARGIN_FEATURE


class MarginPairwiseDataCollator(PairwiseDataCollatorWithPadding):
    """Pads chosen then rejected as upstream does, and adds `batch["margin"]` (one value per pair)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        if features and MARGIN_FEATURE in features[0]:
            batch[MARGIN_FEATURE] = torch.tensor([float(feature[MARGIN_FEATURE]) for feature in features])
        return batch
