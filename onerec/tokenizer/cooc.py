"""Cheap behaviour embeddings: truncated SVD of the positive-PMI item co-occurrence matrix.

Used by ``onerec tokenize --data DIR`` when no embedding file is given, and by the tokenizer benchmark
to measure the tokenizers on real data before the ``onerec embed`` stage's embeddings exist. It is a
stand-in, not the OneRec item embedding (which is content-based and behaviour-aligned).

Design choices
- Two items co-occur when one follows the other within ``window`` positions of the same user's
  positive sequence (both directions, counts summed); the matrix is symmetric and sparse.
- Weights are positive PMI, ``max(0, log(n_ij * total / (n_i * n_j)))`` (Levy and Goldberg 2014).
- ``torch.svd_lowrank`` on the sparse matrix (seeded inside ``torch.random.fork_rng`` so the
  caller's global RNG is untouched); rows are ``U * sqrt(S)``. Items with no co-occurrence get
  a zero row plus a tiny seeded jitter so every row stays finite and distinct.
"""

from __future__ import annotations

import numpy as np


def cooccurrence_embeddings(
    users: np.ndarray, items: np.ndarray, n_items: int, dim: int = 64, window: int = 3, seed: int = 0
) -> np.ndarray:
    """(I, dim) float32 embeddings from the (user, item) positive events, ordered in time within user."""
    import torch

    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    rows, cols = [], []
    for offset in range(1, window + 1):
        same = users[offset:] == users[:-offset]
        a, b = items[:-offset][same], items[offset:][same]
        keep = a != b
        rows += [a[keep], b[keep]]
        cols += [b[keep], a[keep]]
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    key, count = np.unique(r * n_items + c, return_counts=True)
    r, c = key // n_items, key % n_items
    count = count.astype(np.float64)
    row_sum = np.bincount(r, weights=count, minlength=n_items)
    total = count.sum()
    pmi = np.log(np.maximum(count * total / (row_sum[r] * row_sum[c] + 1e-12), 1e-12))
    keep = pmi > 0
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([r[keep], c[keep]])), torch.from_numpy(pmi[keep]).float(), (n_items, n_items),
        check_invariants=True,
    ).coalesce()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, _ = torch.svd_lowrank(matrix, q=min(dim, n_items), niter=4)
    emb = (u * s.sqrt()).numpy().astype(np.float32)  # (I, dim)
    jitter = np.random.default_rng(seed).normal(scale=1e-4, size=emb.shape).astype(np.float32)
    return emb + jitter
