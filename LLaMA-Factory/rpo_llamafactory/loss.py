"""The RPO adaptive-margin losses as small pure functions (the trainer only calls them).

For a pair (x, y_w, y_l) with margin g ≥ 0 and
Δ = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]:

    loss = −(1 − ε)·log σ(z) − ε·log σ(−z),   z = β·(Δ − γ·g)

γ sits inside β (the paper's Eq. 4 writes the margin outside β: its γ equals β times ours).
With g = 0 or γ = 0 this is LLaMA-Factory's sigmoid DPO loss, computed in the same operation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MARGIN_LOSSES = ("sigmoid", "simpo")
"""The `pref_loss` choices that have a margin form below; any other refuses `rpo_gamma > 0` with margins."""


def margin_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    margin: torch.Tensor,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example sigmoid DPO loss with margin γ·g inside β; returns (losses, chosen, rejected rewards)."""
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    logits = logits - gamma * margin.to(device=logits.device, dtype=logits.dtype)
    losses = (
        -F.logsigmoid(beta * logits) * (1 - label_smoothing)
        - F.logsigmoid(-beta * logits) * label_smoothing
    )
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def margin_simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    margin: torch.Tensor,
    beta: float,
    gamma: float,
    simpo_gamma: float,
) -> torch.Tensor:
    """Reference-free SimPO with the margin: −log σ(β·(r_w − r_l − γ·g) − simpo_gamma).

    The log-probabilities are the length-normalised ones LLaMA-Factory passes to SimPO; the
    operation order follows LLaMA-Factory's so that g = 0 reproduces its loss exactly.
    """
    logits = policy_chosen_logps - policy_rejected_logps
    logits = logits - gamma * margin.to(device=logits.device, dtype=logits.dtype)
    logits = logits - simpo_gamma / beta
    return -F.logsigmoid(beta * logits)
