"""Preference losses: values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from onerec.align.losses import dpo_loss, ipo_loss, logratio_margin, preference_loss


def test_dpo_is_ln2_when_policy_equals_reference() -> None:
    """With π = π_ref every log-ratio is 0, so the loss is -log σ(0) = ln 2 for any β."""
    logp = torch.tensor([-3.0, -10.5, -0.2])
    rej = torch.tensor([-1.0, -20.0, -7.0])
    for beta in (0.01, 0.1, 1.0):
        loss = dpo_loss(logp, rej, logp.clone(), rej.clone(), beta=beta)
        torch.testing.assert_close(loss, torch.full((3,), math.log(2.0)))


def test_dpo_hand_value_and_direction() -> None:
    """h = (−1 − −2) − (−3 − −2) = 2; β = 0.5 → −log σ(1) = log(1 + e^−1)."""
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    worse = dpo_loss(torch.tensor([-3.0]), torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert worse.item() > loss.item(), "preferring the rejected session must cost more"


def test_dpo_gradient_raises_chosen_and_lowers_rejected() -> None:
    """A gradient step on the DPO loss raises log π(w) and lowers log π(l)."""
    chosen = torch.tensor([-2.0], requires_grad=True)
    rejected = torch.tensor([-2.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.1).sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item(), (chosen.grad, rejected.grad)


def test_ipo_and_cdpo_hand_values() -> None:
    """IPO at zero margin is (1/(2β))²; cDPO at zero margin is still ln 2."""
    zeros = torch.zeros(2)
    assert ipo_loss(zeros, zeros, zeros, zeros, beta=0.25).tolist() == pytest.approx([4.0, 4.0])
    c = preference_loss("cdpo", zeros, zeros, zeros, zeros, beta=0.1, label_smoothing=0.2)
    torch.testing.assert_close(c, torch.full((2,), math.log(2.0)))
    assert logratio_margin(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]), torch.tensor([0.0])).item() == 0.5
    with pytest.raises(ValueError, match="unknown preference loss"):
        preference_loss("simpo", zeros, zeros, zeros, zeros, beta=0.1)
