"""The bag-of-features encoder, its contrastive loss and training, and the untrained content projection.

Design choices
- Encoder: ``EmbeddingBag`` (sum of token vectors times the IDF/field weights of ``features.py``) ->
  LayerNorm -> Linear -> GELU -> Linear -> L2 normalisation. Items are points on the unit sphere, so
  the kNN check, the loss and the tokenizer's distances all see cosines.
- Loss: symmetric InfoNCE (CLIP / SimCLR form) over a batch of co-engagement pairs (a_i, b_i):
  ``L = ½ [CE(z_a z_bᵀ / τ, diag) + CE(z_b z_aᵀ / τ, diag)]``, every other pair's item an in-batch
  negative. A column whose item *is* the row's anchor or positive (the same item drawn twice in a batch)
  is masked out: it is not a negative, and pushing an item from itself is pure noise.
- Seeds: parameters are initialised and pairs shuffled from one ``torch.Generator(seed)``; the global
  torch RNG is never used, so the same seed gives the same embeddings (a test checks it).
- Progress: one tqdm bar on stderr over every training batch, the epoch and its running mean loss in the
  postfix; ``embed.progress = false`` silences it. The bar draws no random numbers, so it changes nothing.
- ``content_projection`` is the "content-only" method: a fixed Gaussian projection R (V, d),
  ``e_i = normalise(x_i R)``; E[<x_i R, x_j R>] = <x_i, x_j>, so cosines approximate the cosines of the
  sparse feature vectors. No behaviour is used, which is what makes it the baseline for alignment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from onerec.embed import EmbedConfig
from onerec.embed.features import ItemFeatures

ENCODE_CHUNK = 8192


class FeatureEncoder(nn.Module):
    """Sparse feature bag (tokens, weights, offsets) -> unit vector (B, dim)."""

    def __init__(self, n_tokens: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_tokens, hidden, mode="sum")
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every parameter from ``generator`` (never the global RNG)."""
        hidden = self.bag.embedding_dim
        nn.init.normal_(self.bag.weight, std=1.0 / math.sqrt(hidden), generator=generator)
        for layer in (self.fc1, self.fc2):
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            nn.init.zeros_(layer.bias)
        self.norm.reset_parameters()

    def forward(self, tokens: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        h = self.bag(tokens, offsets, per_sample_weights=weights)  # (B, H)
        h = self.fc2(F.gelu(self.fc1(self.norm(h))))  # (B, D)
        return F.normalize(h, dim=-1)


def info_nce(
    z_a: torch.Tensor, z_b: torch.Tensor, items_a: torch.Tensor, items_b: torch.Tensor, temperature: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives; z_a, z_b (B, D) unit rows, items_* (B,) their item ids.

    ``log_q`` (I,): log of each item's share of the pairs. In-batch negatives are drawn in proportion to
    it, so plain InfoNCE learns PMI (popular items pushed away from everything); subtracting log q_j from
    the logit of column j (the "logQ correction" of sampled softmax, Yi et al. 2019) makes the scores
    estimate log p(b | a) instead, popularity included."""
    batch = z_a.shape[0]
    logits = z_a @ z_b.T / temperature  # (B, B): row i = anchor a_i against every b_j
    logits_t = logits.T
    if log_q is not None:
        logits = logits - log_q[items_b][None, :]
        logits_t = logits_t - log_q[items_a][None, :]
    eye = torch.eye(batch, dtype=torch.bool, device=z_a.device)
    # column j is no negative for row i when b_j is the same item as b_i or as a_i
    dup_ab = (items_b[None, :] == items_b[:, None]) | (items_b[None, :] == items_a[:, None])
    dup_ba = (items_a[None, :] == items_a[:, None]) | (items_a[None, :] == items_b[:, None])
    target = torch.arange(batch, device=z_a.device)
    loss_ab = F.cross_entropy(logits.masked_fill(dup_ab & ~eye, float("-inf")), target)
    loss_ba = F.cross_entropy(logits_t.masked_fill(dup_ba & ~eye, float("-inf")), target)
    return 0.5 * (loss_ab + loss_ba)


def _bags(features: ItemFeatures, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens, weights, offsets = features.rows(items)
    return torch.from_numpy(tokens), torch.from_numpy(weights), torch.from_numpy(offsets)


@torch.no_grad()
def encode_items(model: FeatureEncoder, features: ItemFeatures) -> np.ndarray:
    """(I, D) float32 embeddings of every item, row i = item i."""
    model.eval()
    out = []
    for start in range(0, features.n_items, ENCODE_CHUNK):
        items = np.arange(start, min(start + ENCODE_CHUNK, features.n_items), dtype=np.int64)
        out.append(model(*_bags(features, items)))
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, model.fc2.out_features), np.float32)


def train_aligned(
    features: ItemFeatures,
    pairs: np.ndarray,
    cfg: EmbedConfig,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Train the encoder on co-engagement ``pairs`` (P, 2); return (I, D) embeddings and per-epoch logs."""
    generator = torch.Generator().manual_seed(cfg.seed)
    model = FeatureEncoder(features.n_tokens, cfg.hidden, cfg.dim)
    model.reset_parameters(generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pairs_t = torch.from_numpy(np.ascontiguousarray(pairs, dtype=np.int64))
    n_pairs = len(pairs_t)
    log_q = None
    if cfg.logq_correction:  # each item's share of the pair endpoints (both sides sample negatives)
        counts = np.bincount(pairs_t.reshape(-1).numpy(), minlength=features.n_items).astype(np.float64)
        log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))).float()
    steps_per_epoch = max(1, math.ceil(n_pairs / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    history: list[dict[str, Any]] = []
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="embed", unit="batch", dynamic_ncols=True,
               disable=not cfg.progress)
    with bar:
        for epoch in range(cfg.epochs):
            model.train()
            started = time.perf_counter()
            order = torch.randperm(n_pairs, generator=generator)
            total, batches = 0.0, 0
            for start in range(0, n_pairs, cfg.batch_size):
                batch = pairs_t[order[start : start + cfg.batch_size]]  # (B, 2)
                if len(batch) < 2:
                    scheduler.step()
                    bar.update(1)
                    continue
                items = torch.cat([batch[:, 0], batch[:, 1]]).numpy()  # (2B,)
                z = model(*_bags(features, items))  # (2B, D)
                loss = info_nce(z[: len(batch)], z[len(batch) :], batch[:, 0], batch[:, 1], cfg.temperature,
                                log_q)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach())
                batches += 1
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{total / batches:.4f}", refresh=False)
                bar.update(1)
            entry = {"epoch": epoch + 1, "loss": round(total / max(batches, 1), 5),
                     "seconds": round(time.perf_counter() - started, 2)}
            history.append(entry)
            if log is not None:
                with tqdm.external_write_mode():  # the bar steps aside while the line is printed
                    log(entry)
    return encode_items(model, features), history


def content_projection(features: ItemFeatures, dim: int, seed: int) -> np.ndarray:
    """(I, dim) unit rows ``normalise(x_i R)`` with a seeded Gaussian R (V, dim); featureless items -> 0."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(max(features.n_tokens, 1), dim, generator=generator) / math.sqrt(dim)  # (V, D)
    tokens, weights, offsets = _bags(features, np.arange(features.n_items, dtype=np.int64))
    emb = F.embedding_bag(tokens, projection, offsets, mode="sum", per_sample_weights=weights)  # (I, D)
    return F.normalize(emb, dim=-1).numpy().astype(np.float32)
