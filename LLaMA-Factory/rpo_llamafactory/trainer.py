"""The margin-aware subclass of LLaMA-Factory's DPO trainer.

The trainer only routes the batch's margins to `rpo_llamafactory.loss`; with `rpo_gamma: 0` or no
margins it defers to the upstream loss untouched, so plain DPO stays bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from llamafactory.train.dpo import trainer as upstream

from rpo_llamafactory.columns import MARGIN_FEATURE, MARGIN_TRAINER_WANTED
from rpo_llamafactory.errors import RPOError
from rpo_llamafactory.loss import MARGIN_LOSSES, margin_dpo_loss, margin_simpo_loss


def _has_nonzero_margins(dataset: Any) -> bool:
    if dataset is None:
        return False
    if isinstance(dataset, dict):  # several named eval sets
        return any(_has_nonzero_margins(part) for part in dataset.values())
    names = getattr(dataset, "column_names", None) or []
    if MARGIN_FEATURE not in names:
        return False
    if not hasattr(dataset, "__len__"):  # streaming: cannot look ahead, assume margins are there
        return True
    return any(value != 0 for value in dataset[MARGIN_FEATURE])


class MarginDPOTrainer(upstream.CustomDPOTrainer):
    """LLaMA-Factory's DPO trainer with RPO's adaptive margin γ·g inside β."""

    def __init__(self, *args: Any, finetuning_args: Any, **kwargs: Any):
        self.rpo_gamma = float(getattr(finetuning_args, "rpo_gamma", 0.0))
        self._rpo_margin: torch.Tensor | None = None
        if (
            self.rpo_gamma > 0
            and finetuning_args.pref_loss not in MARGIN_LOSSES
            and (_has_nonzero_margins(kwargs.get("train_dataset")) or _has_nonzero_margins(kwargs.get("eval_dataset")))
        ):
            raise RPOError(
                f"rpo_gamma > 0 with a margin column supports pref_loss in {list(MARGIN_LOSSES)}, "
                f"got pref_loss: {finetuning_args.pref_loss} (set rpo_gamma: 0 or change pref_loss)"
            )
        super().__init__(*args, finetuning_args=finetuning_args, **kwargs)

    def get_batch_loss_metrics(self, model: Any, batch: dict[str, torch.Tensor], train_eval: str = "train"):
        margin = batch.pop(MARGIN_FEATURE, None)
        self._rpo_margin = margin if margin is not None and self.rpo_gamma > 0 else None
        try:
            loss, metrics = super().get_batch_loss_metrics(model, batch, train_eval)
        finally:
            self._rpo_margin = None
        if margin is not None:
            prefix = "eval_" if train_eval == "eval" else ""
            metrics[f"{prefix}rpo/margin_mean"] = margin.float().mean().item()
        return loss, metrics

    def dpo_loss(self, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *args, **kwargs):
        if self._rpo_margin is None:
            return super().dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *args, **kwargs)
        return margin_dpo_loss(
            chosen_logps.to(self.accelerator.device),
            rejected_logps.to(self.accelerator.device),
            ref_chosen_logps.to(self.accelerator.device),
            ref_rejected_logps.to(self.accelerator.device),
            self._rpo_margin,
            beta=self.beta,
            gamma=self.rpo_gamma,
            label_smoothing=self.label_smoothing,
        )

    def simpo_loss(self, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> torch.Tensor:
        if self._rpo_margin is None:
            return super().simpo_loss(chosen_logps, rejected_logps)
        return margin_simpo_loss(
            chosen_logps, rejected_logps, self._rpo_margin,
            beta=self.beta, gamma=self.rpo_gamma, simpo_gamma=self.simpo_gamma,
        )


if getattr(upstream, MARGIN_TRAINER_WANTED, False):
    # Made here rather than in the hook's patch function: this module may itself be what first imports
    # llamafactory's trainer module, and the patch function then runs before the class above exists.
    upstream.CustomDPOTrainer = MarginDPOTrainer
