"""Tokenizer metrics: per-level code usage and balance, reconstruction error, collisions.

Design choices
- Usage is counted per level over all items: ``clusters_used`` (codes held by at least one item),
  ``min_size`` / ``max_size`` over all K codes (so an unused code makes ``min_size`` 0), the entropy
  of the code distribution in nats and ``entropy / log K`` (1 = perfectly uniform).
- ``residual_mse`` is the mean over items and dimensions of the residual left after the level (for
  RQ-VAE, of the latent residual, as its codebooks live in the latent space; ``space`` says which).
- The collision rate is measured before the dedup token: the share of items whose L-token code is
  shared with another item.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onerec.tokenizer.codec import collision_rate


def level_usage(codes: np.ndarray, k: int) -> dict[str, float | int]:
    """Usage statistics of one level's codes (N,) over a codebook of size ``k``."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=k)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    return {
        "clusters_used": int((counts > 0).sum()),
        "min_size": int(counts.min()),
        "max_size": int(counts.max()),
        "entropy": entropy,
        "entropy_ratio": entropy / float(np.log(k)),
    }


def tokenizer_metrics(
    level_codes: np.ndarray, k: int, residual_mse: list[float], input_mse: float, space: str = "embedding"
) -> dict[str, Any]:
    """All metrics for (N, L) level codes; ``residual_mse[l]`` is the MSE left after level ``l``."""
    levels = []
    for level in range(level_codes.shape[1]):
        stats = level_usage(level_codes[:, level], k)
        stats["residual_mse"] = float(residual_mse[level])
        levels.append({"level": level, **stats})
    unique_codes = len(np.unique(level_codes, axis=0)) if len(level_codes) else 0
    return {
        "n_items": int(level_codes.shape[0]),
        "codebook_size": int(k),
        "levels": levels,
        "input_mse": float(input_mse),
        "residual_space": space,
        "collision_rate": collision_rate(level_codes),
        "unique_codes": int(unique_codes),
    }
