"""Validation of the seed model during training: NTP loss, and (optionally) a next-item ranking metric.

Design choices
- ``validate``: token-weighted NTP loss (no MoE aux term) over the first ``n`` valid samples, identical on
  every rank after an all-reduce (every rank runs the same number of forwards: FSDP all-gathers are collective).
- ``validate_ranking``: the validation loss is not what a recommender is judged by, and the two part ways
  once a model starts to overfit (the loss turns up while the ranking still improves, or the reverse), so
  ``train.select_metric = "recall@K" | "ndcg@K"`` selects and early-stops on a ranking metric instead:
  trie-constrained next-item beam search (``model.generate.generate_next_items``, ``train.select_beam``
  beams) from each of the first ``train.select_samples`` valid samples' history, ranked list of K items,
  scored against the sample's target items T (leave-one-out: one item; sessions: the session's items):
  recall@K = |top-K ∩ T| / |T|, NDCG@K = Σ_hits 1/log2(rank+2) / Σ_{i<min(|T|,K)} 1/log2(i+2). Rank 0
  alone runs the search and hands the figures to every rank (under FSDP on a gathered, unsharded copy).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from onerec import dist as D
from onerec.batching import SampleTable, collate

METRIC = re.compile(r"^(ntp_loss|recall@[1-9][0-9]*|ndcg@[1-9][0-9]*)$")


def metric_k(name: str) -> int:
    """K of ``recall@K`` / ``ndcg@K`` (0 for ``ntp_loss``)."""
    return int(name.split("@")[1]) if "@" in name else 0


@torch.no_grad()
def validate(model: nn.Module, table: SampleTable, n: int, micro: int, info: D.DistInfo,
             autocast: Any) -> float:
    """Token-weighted NTP loss over the first ``n`` samples of ``table``, the same value on every rank.

    Every rank runs the same number of forwards (FSDP all-gathers are collective): the index list is
    padded to a multiple of ``micro * world`` with weight-0 copies of sample 0.
    """
    core = D.unwrap(model)
    was_training = model.training
    model.eval()
    chunk = micro * info.world_size
    padded = -(-n // chunk) * chunk
    index = np.minimum(np.arange(padded), n - 1)
    weight = (np.arange(padded) < n).astype(np.float64)
    totals = torch.zeros(2, dtype=torch.float64)  # (sum of -log p, tokens)
    for start in range(info.rank * micro, padded, chunk):
        idx, w = index[start:start + micro], torch.from_numpy(weight[start:start + micro])
        batch = collate(table, idx, core.config.max_history, core.config.max_session_items)
        batch = {key: value.to(info.device) for key, value in batch.items()}
        with autocast():
            out = model(**batch)
        logp = core.token_logps(out, batch["sessions"]).sum(dim=(1, 2)).double().cpu()  # (B,)
        tokens = (batch["sessions"] >= 0).sum(dim=1).double().cpu() * core.depth  # (B,)
        totals += torch.stack([-(logp * w).sum(), (tokens * w).sum()])
    totals = D.all_reduce_sum(totals.to(info.device)).cpu()
    model.train(was_training)
    return float(totals[0] / totals[1].clamp(min=1))


def ranking_figures(ranked: np.ndarray, targets: list[np.ndarray], k: int) -> tuple[float, float]:
    """Summed recall@k and NDCG@k of ranked lists (B, >= k; -1 = empty) against target item sets."""
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    recall = ndcg = 0.0
    for row, target in zip(ranked[:, :k], targets):
        target = np.unique(target[target >= 0])
        if len(target) == 0:
            continue
        hit = np.isin(row, target) & (row >= 0)
        recall += hit.sum() / len(target)
        ndcg += float(discounts[hit].sum() / discounts[: min(len(target), k)].sum())
    return recall, ndcg


@torch.no_grad()
def validate_ranking(model: nn.Module, table: SampleTable, n: int, k: int, beam_size: int,
                     batch_size: int = 64) -> dict[str, float]:
    """``recall@k`` and ``ndcg@k`` of next-item beam search over the first ``n`` samples (one process)."""
    from onerec.model.generate import generate_next_items
    from onerec.tokenizer.trie import CodeTrie

    trie = CodeTrie.from_codes(model.item_codes.cpu().numpy())
    device = next(model.parameters()).device
    recall = ndcg = 0.0
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        batch = collate(table, index, model.config.max_history, model.config.max_session_items)
        items, logp = generate_next_items(model, trie, batch["history"].to(device), k, max(beam_size, k),
                                          history_ts=batch["history_ts"].to(device))
        ranked = items.masked_fill(~torch.isfinite(logp), -1).cpu().numpy()
        off = table.target.offsets
        targets = [table.target.values[off[i]:off[i + 1]] for i in index]
        r, g = ranking_figures(ranked, targets, k)
        recall, ndcg = recall + r, ndcg + g
    return {f"recall@{k}": recall / max(n, 1), f"ndcg@{k}": ndcg / max(n, 1)}


def ranking_on_rank0(wrapped: nn.Module, eval_copy: nn.Module | None, table: SampleTable, n: int, k: int,
                     beam_size: int) -> dict[str, float]:
    """``validate_ranking`` run by rank 0 on the trained weights, the figures handed to every rank.

    ``eval_copy`` (FSDP only): an unwrapped model of the same shape; the gathered weights are loaded into it
    (the gather is collective, so every rank calls this)."""
    if eval_copy is not None:
        state = D.full_model_state(wrapped)
        if D.is_main():
            eval_copy.load_state_dict(state, strict=True)
    model = eval_copy if eval_copy is not None else D.unwrap(wrapped)
    return D.main_only(lambda: validate_ranking(model, table, n, k, beam_size))
