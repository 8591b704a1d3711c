"""Mixture-of-Experts feed-forward layer for the OneRec decoder (ONEREC.md section 4).

Design choices
- Router: a bias-free linear map to E logits, computed in fp32. Each token picks the top-k experts by
  ``logits + expert_bias``; its gates are the softmax of the chosen experts' *logits* (the softmax over all
  E experts renormalised over the top k). ``expert_bias`` only steers selection, never the gates (the
  "loss-free" balancing of DeepSeek-V3, arXiv:2408.15664): it is a buffer, zero unless the trainer calls
  :meth:`MixtureOfExperts.update_bias` after an optimizer step. Forward never changes it.
- Auxiliary load-balancing loss (Switch Transformer eq. 4 / GShard): ``E * sum_e f_e * P_e`` with ``f_e`` the
  share of (token, slot) assignments sent to expert e and ``P_e`` the mean router probability of e. It is
  1.0 for a perfectly uniform router and grows with imbalance.
- Experts are two-matrix GELU MLPs held as stacked weights (E, C, F) and (E, F, C).
- Dispatch (:class:`MoEImpl`): ``sorted`` (default) sorts the (token, slot) pairs by expert, gathers the
  tokens with one index, runs each expert on its contiguous slice (one matmul pair per expert, one GELU
  over all of them), and scatters back with ``index_add_``; ``loop`` is the plain reference: every expert
  on every token, weighted by its gate (zero where not chosen). Tests hold the two equal with
  ``torch.testing.assert_close``.
- No capacity factor and no token dropping: every token gets exactly k experts.
- ``forward(x, stats=False)`` skips the router statistics (all-expert softmax, counts, aux loss): beam search
  needs only the outputs, and at a few dozen tokens per decoding step those small ops are ~10% of the
  layer's time. The outputs are the same either way.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class MoEImpl(str, enum.Enum):
    """How tokens reach their experts."""

    SORTED = "sorted"  # sort (token, slot) pairs by expert; one gather, per-expert slices, one scatter
    LOOP = "loop"  # reference: every expert on every token, weighted by its (possibly zero) gate


@dataclass
class RouterStats:
    """What one MoE layer's router did in one forward pass (read-only; nothing is accumulated)."""

    tokens_per_expert: torch.Tensor  # (E,) long: (token, slot) assignments per expert
    aux_loss: torch.Tensor  # () float: Switch/GShard load-balancing loss, 1.0 when uniform
    expert_index: torch.Tensor  # (N, k) long: chosen experts of each token


def route(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits (N, E) -> (expert index (N, k), gates (N, k)); gates sum to 1 over the k chosen.

    Selection uses ``logits + bias``; gates use the unbiased logits."""
    select = logits if bias is None else logits + bias
    index = select.topk(k, dim=-1).indices  # (N, k)
    gates = torch.softmax(logits.gather(-1, index), dim=-1)  # (N, k) == softmax(logits) renormalised on top-k
    return index, gates


def load_balancing_loss(probs: torch.Tensor, index: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch/GShard auxiliary loss ``E * sum_e f_e P_e``; probs (N, E) router softmax, index (N, k)."""
    counts = torch.bincount(index.reshape(-1), minlength=n_experts).to(probs.dtype)  # (E,)
    f = counts / max(index.numel(), 1)
    p = probs.mean(dim=0)
    return n_experts * torch.sum(f * p)


class MixtureOfExperts(nn.Module):
    """Top-k routed expert MLPs; ``forward(x (B, T, C)) -> (y (B, T, C), RouterStats)``."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int,
                 impl: MoEImpl | str = MoEImpl.SORTED) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be in 1..n_experts={n_experts}")
        self.n_experts, self.top_k, self.d_ff = n_experts, top_k, d_ff
        self.impl = MoEImpl(impl)
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w_up = nn.Parameter(torch.empty(n_experts, d_model, d_ff))  # (E, C, F)
        self.w_down = nn.Parameter(torch.empty(n_experts, d_ff, d_model))  # (E, F, C)
        # loss-free balancing bias; changed only by update_bias (called by the trainer), never by forward
        self.register_buffer("expert_bias", torch.zeros(n_experts))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Normal init scaled by fan-in (router, up, down), from ``generator`` when given."""
        d_model = self.w_up.shape[1]
        nn.init.normal_(self.router.weight, std=1.0 / math.sqrt(d_model), generator=generator)
        nn.init.normal_(self.w_up, std=1.0 / math.sqrt(d_model), generator=generator)
        nn.init.normal_(self.w_down, std=1.0 / math.sqrt(self.d_ff), generator=generator)

    @staticmethod
    def expert(w_up: torch.Tensor, w_down: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One expert (weights (C, F), (F, C)) on tokens x (n, C) -> (n, C)."""
        return F.gelu(x @ w_up) @ w_down

    def forward(self, x: torch.Tensor, impl: MoEImpl | str | None = None, stats: bool = True
                ) -> tuple[torch.Tensor, RouterStats | None]:
        """x (B, T, C) -> (y (B, T, C), RouterStats, or None when ``stats`` is False)."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (N, C)
        logits = self.router(tokens).float()  # (N, E)
        index, gates = route(logits, self.top_k, self.expert_bias)  # (N, k), (N, k)
        router = None
        if stats:
            router = RouterStats(
                tokens_per_expert=torch.bincount(index.reshape(-1), minlength=self.n_experts),
                aux_loss=load_balancing_loss(torch.softmax(logits, dim=-1), index, self.n_experts),
                expert_index=index,
            )
        gates = gates.to(tokens.dtype)
        impl = self.impl if impl is None else MoEImpl(impl)
        if impl is MoEImpl.SORTED:
            y = self._dispatch_sorted(tokens, index, gates)
        else:
            y = self._dispatch_loop(tokens, index, gates)
        return y.reshape(shape), router

    def _dispatch_sorted(self, tokens: torch.Tensor, index: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        flat_expert = index.reshape(-1)  # (N * k,)
        order = torch.argsort(flat_expert, stable=True)  # (N * k,) assignments grouped by expert
        token_of = order // self.top_k  # (N * k,) token of each sorted assignment
        counts = torch.bincount(flat_expert, minlength=self.n_experts).tolist()
        routed = tokens.index_select(0, token_of)  # (N * k, C)
        # unbind once: indexing w_up[e] per expert would make autograd write E full-size zero gradients
        ups, downs, sizes = [], [], []
        for w_up, w_down, n in zip(self.w_up.unbind(0), self.w_down.unbind(0), counts):
            if n:
                ups.append(w_up)
                downs.append(w_down)
                sizes.append(n)
        # self.expert per slice, but with one GELU over all slices (elementwise: same values, 1 op instead of E)
        if torch.is_grad_enabled():
            hidden = F.gelu(torch.cat([x @ w for x, w in zip(routed.split(sizes), ups)]))  # (N * k, F)
            y_sorted = torch.cat([h @ w for h, w in zip(hidden.split(sizes), downs)])  # (N * k, C)
        else:  # inference (beam search: a few dozen tokens): matmuls write their slices in place, no cat
            hidden = routed.new_empty(routed.shape[0], self.d_ff)
            for x, w, out in zip(routed.split(sizes), ups, hidden.split(sizes)):
                torch.mm(x, w, out=out)
            hidden = F.gelu(hidden)
            y_sorted = torch.empty_like(routed)
            for h, w, out in zip(hidden.split(sizes), downs, y_sorted.split(sizes)):
                torch.mm(h, w, out=out)
        y_sorted = y_sorted * gates.reshape(-1)[order, None]
        return torch.zeros_like(tokens).index_add_(0, token_of, y_sorted)

    def _dispatch_loop(self, tokens: torch.Tensor, index: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        y = torch.zeros_like(tokens)
        for e, (w_up, w_down) in enumerate(zip(self.w_up.unbind(0), self.w_down.unbind(0))):
            weight = (gates * (index == e)).sum(dim=-1)  # (N,) gate of expert e, 0 if not chosen
            y = y + weight[:, None] * self.expert(w_up, w_down, tokens)
        return y

    @torch.no_grad()
    def update_bias(self, tokens_per_expert: torch.Tensor, rate: float) -> None:
        """Loss-free balancing step: raise the bias of under-loaded experts, lower over-loaded ones.

        ``b_e += rate * sign(mean_load - load_e)`` (DeepSeek-V3 section 2.1.2). Call after an optimizer step."""
        load = tokens_per_expert.float().to(self.expert_bias.device)
        self.expert_bias += rate * torch.sign(load.mean() - load)


class DenseFFN(nn.Module):
    """The dense ablation of the MoE layer, with the same (y, stats) interface (stats is None)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor, stats: bool = True) -> tuple[torch.Tensor, None]:
        return self.down(F.gelu(self.up(x))), None
