"""Ranking and generation-health metrics (EVAL.md §1, §2, §4): pure numpy functions, no model, no I/O.

Design choices
- Per-sample values first (``hit_ranks``, ``session_recall_values`` ...), means second: the harness averages
  them, and tests can check each user's value by hand.
- One relevant item (leave-one-out): ``rank`` is the 1-based position of the target in the top-K list, 0
  when absent. Recall@K = mean(1 <= rank <= K); NDCG@K = mean(1 / log2(rank + 1)) over hits (IDCG = 1).
- Sessions (several relevant items ``P``): Session Recall@m = |G ∩ P| / min(|P|, m); Session NDCG@m gives
  relevance 1 to each generated item of ``P`` at its position in ``G`` and divides by the ideal DCG of
  min(|P|, m) hits at the top. Retrieval-style Recall@K over a ranked list uses the same normalisation
  (|top-K ∩ P| / min(|P|, K)), so a perfect list scores 1 whatever |P| is.
- A generated list may hold -1 (no item: padding, or an invalid code). It never matches a relevant item
  and counts as invalid in ``valid_item_rate``; repeated items are counted once in a hit set, so a list
  that repeats a relevant item cannot score above 1.
- Health (EVAL.md §4): ``valid_item_rate`` = share of generated slots holding an existing item id;
  ``duplicate_rate`` = share of sessions in which some valid item appears twice; ``item_coverage`` =
  distinct valid items generated / catalogue size; ``code_entropy`` = per-level Shannon entropy (bits) of
  the generated items' semantic-ID tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hit_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target in its ranked list ``topk`` (B, K); 0 when it is not there. (B,) int64."""
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    if topk.ndim != 2 or targets.shape != (topk.shape[0],):
        raise ValueError(f"topk must be (B, K) and targets (B,), got {topk.shape} and {targets.shape}")
    match = topk == targets[:, None]  # (B, K)
    first = match.argmax(axis=1)  # first match wins when a list repeats the target
    return np.where(match.any(axis=1), first + 1, 0).astype(np.int64)


def recall_values(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-sample 1.0 when the target is ranked within the top ``k``, else 0.0. (B,) float64."""
    ranks = np.asarray(ranks)
    return ((ranks >= 1) & (ranks <= k)).astype(np.float64)


def ndcg_values(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-sample 1 / log2(rank + 1) for targets ranked within the top ``k``, 0 otherwise. (B,) float64."""
    ranks = np.asarray(ranks)
    return np.where(recall_values(ranks, k) > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of samples whose target is ranked within the top ``k`` (``ranks`` from :func:`hit_ranks`)."""
    return float(np.mean(recall_values(ranks, k))) if np.size(ranks) else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean of 1 / log2(rank + 1) for targets ranked within the top ``k``, 0 otherwise (one relevant item)."""
    return float(np.mean(ndcg_values(ranks, k))) if np.size(ranks) else float("nan")


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))  # position 1..n -> 1/log2(pos+1)


def _first_occurrence(row: np.ndarray) -> np.ndarray:
    """Mask (len(row),) true at the first occurrence of each value of ``row``."""
    _, first = np.unique(row, return_index=True)
    mask = np.zeros(len(row), dtype=bool)
    mask[first] = True
    return mask


def session_recall_values(generated: np.ndarray, positives: Sequence[np.ndarray], m: int | None = None) -> np.ndarray:
    """Per-sample |G ∩ P| / min(|P|, m) with G the first ``m`` items of each row of ``generated`` (B, >=m).

    Samples with |P| = 0 get NaN (the harness evaluates only |P| >= 1).
    """
    generated = np.asarray(generated)
    m = generated.shape[1] if m is None else m
    if len(positives) != generated.shape[0]:
        raise ValueError(f"{generated.shape[0]} generated rows but {len(positives)} positive sets")
    out = np.full(generated.shape[0], np.nan)
    for b, pos in enumerate(positives):
        pos = np.unique(np.asarray(pos, dtype=np.int64))
        if pos.size == 0:
            continue
        g = generated[b, :m]
        hits = np.isin(np.unique(g[g >= 0]), pos).sum()
        out[b] = hits / min(pos.size, m)
    return out


def session_ndcg_values(generated: np.ndarray, positives: Sequence[np.ndarray], m: int | None = None) -> np.ndarray:
    """Per-sample NDCG of the first ``m`` generated items against the relevant set ``P`` (binary relevance).

    DCG = Σ_j [G_j ∈ P, first occurrence] / log2(j + 1); IDCG = Σ_{j=1}^{min(|P|, m)} 1 / log2(j + 1).
    Samples with |P| = 0 get NaN.
    """
    generated = np.asarray(generated)
    m = generated.shape[1] if m is None else m
    if len(positives) != generated.shape[0]:
        raise ValueError(f"{generated.shape[0]} generated rows but {len(positives)} positive sets")
    disc = _discounts(m)
    out = np.full(generated.shape[0], np.nan)
    for b, pos in enumerate(positives):
        pos = np.unique(np.asarray(pos, dtype=np.int64))
        if pos.size == 0:
            continue
        g = generated[b, :m]
        rel = np.isin(g, pos) & (g >= 0) & _first_occurrence(g)
        out[b] = float((rel * disc[: len(g)]).sum()) / float(disc[: min(pos.size, m)].sum())
    return out


def mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def valid_item_rate(items: np.ndarray, n_items: int) -> float:
    """Share of generated slots (any shape) that hold an existing item id in ``0 .. n_items-1``."""
    items = np.asarray(items)
    if items.size == 0:
        return float("nan")
    return float(np.mean((items >= 0) & (items < n_items)))


def duplicate_rate(sessions: np.ndarray) -> float:
    """Share of sessions (rows of the last axis, any leading shape) in which some valid item occurs twice."""
    sessions = np.asarray(sessions)
    flat = sessions.reshape(-1, sessions.shape[-1])  # (S, m)
    if flat.shape[0] == 0:
        return float("nan")
    srt = np.sort(flat, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)  # (S, m-1)
    return float(np.mean(dup.any(axis=1)))


def item_coverage(items: np.ndarray, n_items: int) -> float:
    """Distinct valid items generated (any shape) over the catalogue size ``n_items``."""
    items = np.asarray(items).ravel()
    valid = items[(items >= 0) & (items < n_items)]
    return float(np.unique(valid).size / n_items)


def code_entropy(codes: np.ndarray) -> list[float]:
    """Per-level Shannon entropy in bits of the rows of ``codes`` (N, D): one value per level (column)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (N, D), got shape {codes.shape}")
    out = []
    for level in range(codes.shape[1]):
        _, counts = np.unique(codes[:, level], return_counts=True)
        if counts.sum() == 0:
            out.append(float("nan"))
            continue
        p = counts / counts.sum()
        out.append(max(0.0, float(-(p * np.log2(p)).sum())))  # max: no "-0.0" for a single code
    return out


def health(items: np.ndarray, n_items: int, item_codes: np.ndarray | None = None) -> dict[str, float | list[float]]:
    """EVAL.md §4 for generated sessions ``items`` (..., m): validity, duplicates, coverage, code entropy.

    ``item_codes`` (n_items, D) are the semantic IDs; when given, ``code_entropy`` holds the per-level
    entropy (bits) of the codes of the valid generated items.
    """
    items = np.asarray(items)
    out: dict[str, float | list[float]] = {
        "valid_item_rate": valid_item_rate(items, n_items),
        "duplicate_rate": duplicate_rate(items),
        "item_coverage": item_coverage(items, n_items),
    }
    if item_codes is not None:
        flat = items.ravel()
        flat = flat[(flat >= 0) & (flat < n_items)]
        out["code_entropy"] = code_entropy(np.asarray(item_codes)[flat]) if flat.size else []
    return out
