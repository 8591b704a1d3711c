"""Residual quantisation driver and plain residual k-means (faiss): the "RQ-Kmeans" baseline.

Design choices
- ``residual_quantize`` runs any per-level fitter ``fit(residual (N, d), level) -> (centroids (K, d),
  assign (N,))`` L times: level 1 quantises the embedding, level l+1 the residual ``r - c[assign]``
  (ONEREC.md section 2). It returns the codes, the codebooks and the residual after every level, so
  every method (balanced, kmeans) shares one loop and one set of metrics.
- ``fit_kmeans_level`` is faiss ``Kmeans`` (Lloyd, seeded, faiss' own subsampling of at most
  ``max_points_per_centroid * K`` training points) followed by an exact nearest-centroid assignment of
  all items; it is what the balanced method is timed against.
- ``nearest_clusters`` (top-c clusters per item, exact L2, faiss flat search which chunks internally)
  is shared with the balanced assignment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LevelFit = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class ResidualCodes:
    """Result of residual quantisation: ``codes`` (N, L), ``codebooks`` (L, K, d), per-level residual MSE."""

    codes: np.ndarray  # (N, L) int64
    codebooks: np.ndarray  # (L, K, d) float32
    residual_mse: list[float]  # mean over items and dims of the residual after each level
    input_mse: float  # mean square of the input (the "residual" before level 1)


def residual_quantize(x: np.ndarray, levels: int, fit: LevelFit) -> ResidualCodes:
    """Quantise ``x`` (N, d) in ``levels`` residual levels with the per-level fitter ``fit``."""
    residual = np.ascontiguousarray(x, dtype=np.float32).copy()  # (N, d)
    codes, books, mse = [], [], []
    input_mse = float(np.mean(residual.astype(np.float64) ** 2))
    for level in range(levels):
        centroids, assign = fit(residual, level)  # (K, d), (N,)
        residual -= centroids[assign]
        codes.append(assign.astype(np.int64))
        books.append(centroids.astype(np.float32))
        mse.append(float(np.mean(residual.astype(np.float64) ** 2)))
    return ResidualCodes(np.stack(codes, axis=1), np.stack(books), mse, input_mse)


def nearest_clusters(x: np.ndarray, centroids: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``c`` nearest centroids of each row: (dist (N, c) float32 ascending, ids (N, c) int64)."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), min(c, centroids.shape[0]))
    return dist, ids.astype(np.int64)


def fit_kmeans_level(
    x: np.ndarray, k: int, seed: int, iters: int = 20, max_points_per_centroid: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Plain (unbalanced) k-means with faiss: (centroids (K, d), nearest-centroid assignment (N,))."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(
        x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1, verbose=False,
    )
    km.train(x)
    _, assign = nearest_clusters(x, km.centroids, 1)
    return km.centroids.copy(), assign[:, 0]


def residual_kmeans(x: np.ndarray, levels: int, k: int, seed: int, iters: int = 20) -> ResidualCodes:
    """RQ-Kmeans: plain faiss k-means at each residual level (level ``l`` seeded with ``seed + l``)."""
    return residual_quantize(x, levels, lambda r, level: fit_kmeans_level(r, k, seed + level, iters))
