"""The embedding check: a nearest-neighbour next-item recommender on the embeddings alone, vs popularity.

Design choices
- Query = normalise(mean of the unit embeddings of the last ``k`` history items); score = cosine with
  every item; top-K by ``torch.topk`` in batches of users. Full ranking over all items, no negative
  sampling, no filtering of history items (EVAL.md §1). A sample with an empty history gets the
  popularity list (counted as ``samples_without_history``).
- Popularity = items ranked by their number of *training* positives (ties by item id), the same list
  for every sample.
- Held-out samples are ``samples.parquet`` rows of ``embed.eval_split``; relevant items
  ``P = target[target_positive]`` (deduplicated), samples with ``|P| >= 1`` only. For leave-one-out
  (Amazon) P is the one target, so Recall@K is the hit rate of EVAL.md §1; for next-session samples
  (KuaiRand, EVAL.md §2) Recall@K = |topK ∩ P| / min(|P|, K) and NDCG@K has relevance 1 for items of P,
  IDCG over min(|P|, K) hits. The metrics are ``onerec.evaluate.metrics``, the project's one harness.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from onerec.io import OnerecError

SCORE_BATCH = 1024


def padded(lists: pl.Series, width: int | None = None) -> np.ndarray:
    """A list<int> Series as an int64 (S, width) array, left-aligned, padded with -1."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    width = int(lengths.max()) if width is None and len(lengths) else (width or 0)
    out = np.full((len(lengths), max(width, 1)), -1, dtype=np.int64)
    flat = lists.explode().drop_nulls().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = flat
    return out


def held_out(samples: pl.DataFrame, split: str, last_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(history (S, last_k) last items, oldest first; relevant (S, P)) of ``split`` samples with |P| >= 1, -1 padded."""
    need = ("split", "history", "target")
    missing = [c for c in need if c not in samples.columns]
    if missing:
        raise OnerecError(f"samples.parquet: missing column {missing[0]!r}")
    rows = samples.filter(pl.col("split") == split).with_row_index("_s")
    if "target_positive" not in rows.columns:  # every target item counts
        rows = rows.with_columns(target_positive=pl.col("target").list.eval(pl.element().is_not_null()))
    relevant = (
        rows.select("_s", "target", "target_positive")
        .explode(["target", "target_positive"])
        .filter(pl.col("target_positive").fill_null(True) & pl.col("target").is_not_null())
        .unique(["_s", "target"], maintain_order=True)
        .group_by("_s", maintain_order=True)
        .agg(pl.col("target"))
    )
    rows = rows.join(relevant.rename({"target": "relevant"}), on="_s", how="inner").sort("_s")
    if rows.height == 0:
        return np.zeros((0, last_k), np.int64), np.zeros((0, 1), np.int64)
    history = padded(rows["history"].list.tail(last_k), last_k)
    return history, padded(rows["relevant"])


def popularity_ranking(counts: np.ndarray, k: int) -> np.ndarray:
    """(k,) the k items with most training positives, ties by item id."""
    return np.argsort(-counts, kind="stable")[:k].astype(np.int64)


def knn_topk(embeddings: np.ndarray, history: np.ndarray, k: int, fallback: np.ndarray) -> np.ndarray:
    """(S, k) top-k items by cosine to the mean of each row's history embeddings (-1 padded history)."""
    emb = F.normalize(torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)), dim=-1)  # (I, D)
    k = min(k, emb.shape[0])
    out = np.empty((len(history), k), dtype=np.int64)
    for start in range(0, len(history), SCORE_BATCH):
        hist = torch.from_numpy(history[start : start + SCORE_BATCH])  # (B, n)
        valid = (hist >= 0).unsqueeze(-1).float()  # (B, n, 1)
        query = (emb[hist.clamp(min=0)] * valid).sum(1) / valid.sum(1).clamp(min=1.0)  # (B, D)
        scores = F.normalize(query, dim=-1) @ emb.T  # (B, I)
        top = torch.topk(scores, k, dim=1).indices.numpy()
        top[~(hist >= 0).any(1).numpy()] = fallback[:k]
        out[start : start + len(top)] = top
    return out


def ranking_metrics(top: np.ndarray, relevant: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall@K = |topK ∩ P| / min(|P|, K) and NDCG@K (``onerec.evaluate.metrics``), averaged over rows."""
    from onerec.evaluate import metrics

    positives = [row[row >= 0] for row in relevant]
    out = {}
    for k in ks:
        out[f"recall@{k}"] = round(metrics.mean_ignoring_nan(metrics.session_recall_values(top, positives, k)), 6)
        out[f"ndcg@{k}"] = round(metrics.mean_ignoring_nan(metrics.session_ndcg_values(top, positives, k)), 6)
    return out


def evaluate(
    embeddings: dict[str, np.ndarray],
    popularity: np.ndarray,
    samples: pl.DataFrame,
    split: str,
    last_k: int,
    ks: list[int],
) -> dict[str, Any]:
    """Recall/NDCG@K of popularity and of the kNN recommender on each named embedding table."""
    history, relevant = held_out(samples, split, last_k)
    kmax = min(max(ks), len(popularity))
    ks = [k for k in ks if k <= kmax]
    fallback = popularity_ranking(popularity, kmax)
    results: dict[str, Any] = {
        "split": split,
        "samples": int(len(history)),
        "samples_without_history": int((~(history >= 0).any(1)).sum()) if len(history) else 0,
        "relevant_per_sample_mean": round(float((relevant >= 0).sum(1).mean()), 3) if len(history) else 0.0,
        "knn_last_k": last_k,
        "methods": {},
    }
    if not len(history):
        return results
    results["methods"]["popularity"] = ranking_metrics(np.tile(fallback, (len(history), 1)), relevant, ks)
    for name, emb in embeddings.items():
        results["methods"][name] = ranking_metrics(knn_topk(emb, history, kmax, fallback), relevant, ks)
    return results
