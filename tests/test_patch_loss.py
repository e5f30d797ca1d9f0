"""The margin losses against values computed by hand (softplus(x) = log(1 + e^x))."""

import pytest
import torch
from rpo_llamafactory.loss import margin_dpo_loss, margin_simpo_loss


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# Δ = (−10 − (−11)) − (−12 − (−11)) = 1 − (−1) = 2 in every DPO case below.
POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED = _t(-10.0), _t(-12.0), _t(-11.0), _t(-11.0)


@pytest.mark.parametrize(
    ("beta", "gamma", "margin", "smoothing", "expected"),
    [
        (0.1, 0.5, 2.0, 0.0, 0.6443966600735709),  # z = 0.1·(2 − 1) = 0.1 → softplus(−0.1)
        (0.5, 0.25, 4.0, 0.2, 0.5740769841801068),  # z = 0.5·(2 − 1) = 0.5 → 0.8·softplus(−0.5) + 0.2·softplus(0.5)
        (0.1, 0.0, 5.0, 0.0, 0.5981388693815918),  # γ = 0: plain DPO, z = 0.2
        (1.0, 0.5, 0.0, 0.0, 0.1269280110429725),  # g = 0: plain DPO, z = 2
    ],
)
def test_margin_dpo_loss_hand_computed(beta, gamma, margin, smoothing, expected):
    losses, chosen_rewards, rejected_rewards = margin_dpo_loss(
        POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, _t(margin), beta, gamma, smoothing
    )
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    assert chosen_rewards.item() == pytest.approx(beta * 1.0)
    assert rejected_rewards.item() == pytest.approx(beta * -1.0)


def test_margin_dpo_loss_is_per_example():
    losses, _, _ = margin_dpo_loss(_t(-1, -1), _t(-1, -1), _t(-1, -1), _t(-1, -1), _t(0, 4), 0.1, 0.5)
    # Δ = 0: loss = softplus(β·γ·g) → log 2 and softplus(0.2)
    assert losses.tolist() == pytest.approx([0.6931471805599453, 0.7981388693815918], abs=1e-12)


def test_margin_dpo_loss_zero_margin_matches_upstream_bits():
    """g = 0 must reproduce the unpatched sigmoid loss exactly, not just approximately."""
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(64, generator=generator) for _ in range(4))
    beta, smoothing = 0.1, 0.1
    logits = (pc - pr) - (rc - rr)
    upstream = -torch.nn.functional.logsigmoid(beta * logits) * (1 - smoothing) - torch.nn.functional.logsigmoid(
        -beta * logits
    ) * smoothing
    losses, _, _ = margin_dpo_loss(pc, pr, rc, rr, torch.zeros(64), beta, 0.05, smoothing)
    assert torch.equal(losses, upstream)


@pytest.mark.parametrize(
    ("gamma", "margin", "expected"),
    [
        (0.1, 3.0, 0.744396660073571),  # z = 2·(0.5 − 0.3) − 0.5 = −0.1 → softplus(0.1)
        (0.1, 0.0, 0.4740769841801067),  # z = 2·0.5 − 0.5 = 0.5 → softplus(−0.5)
    ],
)
def test_margin_simpo_loss_hand_computed(gamma, margin, expected):
    losses = margin_simpo_loss(_t(-1.0), _t(-1.5), _t(margin), beta=2.0, gamma=gamma, simpo_gamma=0.5)
    assert losses.item() == pytest.approx(expected, abs=1e-12)


def test_losses_carry_gradients_to_the_policy_only():
    policy_chosen = _t(-3.0).requires_grad_()
    losses, chosen_rewards, _ = margin_dpo_loss(policy_chosen, _t(-4.0), _t(-3.5), _t(-3.5), _t(2.0), 0.1, 0.5)
    losses.sum().backward()
    assert policy_chosen.grad is not None and policy_chosen.grad.item() < 0
    assert not chosen_rewards.requires_grad
