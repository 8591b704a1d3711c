"""Preference losses over sequence log-probabilities (ONEREC.md §6).

All functions take summed log-probabilities of whole sessions, shape (B,): the policy's and the frozen
reference's, for the chosen session ``S^w`` and the rejected one ``S^l``. They return the per-pair loss
(B,) so callers can weight or mask pairs; reduce with ``.mean()``.

- DPO (Rafailov et al. 2023, eq. 7; OneRec eq. for L_DPO):
  ``-log σ(β [log π(S^w)/π_ref(S^w) - log π(S^l)/π_ref(S^l)])``. Equals ln 2 when policy == reference.
- IPO (Azar et al. 2023, eq. 17): ``(h - 1/(2β))²`` with ``h`` the same log-ratio margin (without β).
- cDPO / label smoothing (Mitchell 2023): ``(1-ε)·DPO(h) + ε·DPO(-h)``, robust to flipped preferences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logratio_margin(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """``h = [log π(w) - log π_ref(w)] - [log π(l) - log π_ref(l)]``, shape (B,)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair DPO loss (B,); ``label_smoothing`` > 0 gives conservative DPO (cDPO)."""
    h = logratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    loss = -F.logsigmoid(beta * h)
    if label_smoothing > 0:
        loss = (1 - label_smoothing) * loss + label_smoothing * -F.logsigmoid(-beta * h)
    return loss


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Per-pair IPO loss (B,): the margin regressed to ``1 / (2β)`` (no saturation, so no over-fitting)."""
    h = logratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return (h - 1.0 / (2.0 * beta)) ** 2


def preference_loss(
    kind: str,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Dispatch by name: ``dpo`` | ``cdpo`` | ``ipo``."""
    if kind == "dpo":
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    if kind == "cdpo":
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    if kind == "ipo":
        return ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    raise ValueError(f"unknown preference loss {kind!r} (dpo, cdpo, ipo)")
