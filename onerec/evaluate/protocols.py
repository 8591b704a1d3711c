"""The evaluation harnesses (EVAL.md §1 leave-one-out, §2 next session), shared by OneRec and every baseline.

Design choices
- A recommender is any callable ``recommend(history, k) -> items``: ``history`` is an int64 array (B, n) of
  item ids, oldest first, padded with -1 at the end of each row; the answer is (B, k) item ids, best first
  (-1 where it has fewer than k). OneRec (beam search), popularity, SASRec and TIGER-style all go through
  this one door, so they are scored by the same code on the same histories and targets.
- Leave-one-out (§1): per user ``i_1..i_n``, train = ``i_1..i_{n-2}``, valid = (last ``max_history`` of
  ``i_1..i_{n-2}``, ``i_{n-1}``), test = (last ``max_history`` of ``i_1..i_{n-1}``, ``i_n``). Full ranking
  over all items, no filtering of history items.
- Next session (§2): the first ``m`` items of the ranked list are the generated session ``G`` (for a
  generative model the top beam comes first, then the next beams' new items); Recall@K uses the first K.
  Only samples with at least one positive are evaluated; their number is reported.
- Ties between equal scores are broken by the lower item id (:func:`topk_by_score`), so a score-based
  recommender gives the same list on every run.
- Progress (``progress=True``; the commands pass ``eval.progress``): a tqdm bar on stderr over the samples,
  with the running Recall@K of the largest K in its postfix. It only reads the ranked lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onerec.evaluate import metrics

Recommender = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class NextItemSet:
    """Leave-one-out evaluation samples: ``history`` (U, n) padded with -1 at the end, ``target`` (U,)."""

    history: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class LeaveOneOut:
    """EVAL.md §1 split of per-user sequences: training sequences plus the valid and test samples."""

    n_items: int
    train_sequences: list[np.ndarray]
    valid: NextItemSet
    test: NextItemSet


@dataclass(frozen=True)
class NextSessionSet:
    """Next-session samples: ``history`` (S, n) padded with -1, ``positives`` the engaged items of each session."""

    history: np.ndarray
    positives: list[np.ndarray]


def pad_histories(histories: Sequence[np.ndarray], max_history: int) -> np.ndarray:
    """The last ``max_history`` items of each history, oldest first, padded with -1 at the end. (U, n) int64."""
    width = max(1, min(max_history, max((len(h) for h in histories), default=1)))
    out = np.full((len(histories), width), -1, dtype=np.int64)
    for row, hist in enumerate(histories):
        tail = np.asarray(hist, dtype=np.int64)[-max_history:]
        out[row, : len(tail)] = tail
    return out


def leave_one_out(sequences: Sequence[np.ndarray], n_items: int, max_history: int = 20) -> LeaveOneOut:
    """Split each user's chronological sequence (length >= 3) per EVAL.md §1. No valid/test target is trained on."""
    short = sum(1 for s in sequences if len(s) < 3)
    if short:
        raise ValueError(f"leave-one-out needs sequences of at least 3 items; {short} are shorter")
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    bad = sum(int(((s < 0) | (s >= n_items)).any()) for s in seqs)
    if bad:
        raise ValueError(f"{bad} sequences hold item ids outside 0..{n_items - 1}")
    return LeaveOneOut(
        n_items=n_items,
        train_sequences=[s[:-2] for s in seqs],
        valid=NextItemSet(pad_histories([s[:-2] for s in seqs], max_history), np.array([s[-2] for s in seqs])),
        test=NextItemSet(pad_histories([s[:-1] for s in seqs], max_history), np.array([s[-1] for s in seqs])),
    )


def topk_by_score(scores: "torch.Tensor", k: int) -> np.ndarray:  # noqa: F821 (torch imported lazily)
    """Top ``k`` column ids of ``scores`` (B, I) by descending score, ties broken by the lower id. (B, k) int64.

    With fewer than ``k`` columns the list is padded with -1.
    """
    import torch

    want, k = k, min(k, scores.shape[1])
    n_probe = min(k + 1, scores.shape[1])
    values, idx = torch.topk(scores, n_probe, dim=1)  # (B, k+1), sorted descending
    # a tie anywhere in the probed top (or at the boundary) may be ordered arbitrarily by topk: redo those rows
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1) if n_probe > 1 else torch.zeros(len(scores), dtype=torch.bool)
    out = idx[:, :k].clone()
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        order = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :k]
        out[rows] = order
    out = out.numpy().astype(np.int64)
    if want > k:
        out = np.concatenate([out, np.full((len(out), want - k), -1, dtype=np.int64)], axis=1)
    return out


def _ranked_lists(
    recommend: Recommender,
    history: np.ndarray,
    k: int,
    batch_size: int,
    progress: bool = False,
    desc: str = "evaluate",
    live: tuple[str, Callable[[int, np.ndarray], np.ndarray]] | None = None,
) -> np.ndarray:
    """Call ``recommend`` over ``history`` in batches and check what it returns. (U, k) int64.

    With ``progress`` a tqdm bar on stderr counts the samples; ``live = (name, values)`` puts the running mean
    of ``values(start, ranked_batch)`` (one figure per sample of the batch, NaN ignored) in its postfix.
    """
    from tqdm import tqdm

    parts = []
    total, count = 0.0, 0
    with tqdm(total=len(history), desc=desc, unit="sample", dynamic_ncols=True, leave=None,
              disable=not progress) as bar:
        for start in range(0, len(history), batch_size):
            batch = history[start : start + batch_size]
            items = np.asarray(recommend(batch, k))
            if items.shape != (len(batch), k):
                raise ValueError(f"recommender returned shape {items.shape} for a batch of {len(batch)} and k={k}")
            parts.append(items.astype(np.int64))
            if live is not None and not bar.disable:
                values = np.asarray(live[1](start, parts[-1]), dtype=np.float64)
                total, count = total + float(np.nansum(values)), count + int(np.isfinite(values).sum())
                bar.set_postfix({live[0]: f"{total / max(count, 1):.4f}"}, refresh=False)
            bar.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def evaluate_next_item(
    recommend: Recommender,
    samples: NextItemSet,
    ks: Sequence[int] = (5, 10),
    batch_size: int = 1024,
    progress: bool = False,
    desc: str = "evaluate",
    values: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Leave-one-out Recall@K and NDCG@K (full ranking, one target per user) of ``recommend`` on ``samples``.

    ``progress``: a tqdm bar (``desc``) on stderr with the running Recall@K of the largest K. ``values``: a
    dict that receives each metric's per-sample values (U,), whose means are the returned figures.
    """
    top = max(ks)
    live = (f"recall@{top}",
            lambda start, items: (metrics.hit_ranks(items, samples.target[start : start + len(items)]) > 0) * 1.0)
    ranked = _ranked_lists(recommend, samples.history, top, batch_size, progress, desc, live)
    ranks = metrics.hit_ranks(ranked, samples.target)
    per: dict[str, np.ndarray] = {}
    for k in ks:
        per[f"recall@{k}"] = metrics.recall_values(ranks, k)
        per[f"ndcg@{k}"] = metrics.ndcg_values(ranks, k)
    if values is not None:
        values.update(per)
    return {"n_samples": float(len(ranks))} | {name: metrics.mean_ignoring_nan(v) for name, v in per.items()}


def evaluate_next_session(
    recommend: Recommender,
    samples: NextSessionSet,
    m: int,
    ks: Sequence[int] = (10, 50),
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "evaluate",
    values: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Session Recall@m / NDCG@m of the first ``m`` ranked items and Recall@K of the first K (EVAL.md §2).

    Samples without positives are dropped; ``n_sessions`` says how many were evaluated. ``progress``: a tqdm
    bar (``desc``) on stderr with the running Recall@K of the largest K. ``values``: a dict that receives each
    metric's per-session values (one per evaluated session, in order), whose means are the returned figures.
    """
    keep = np.array([len(p) > 0 for p in samples.positives], dtype=bool)
    history = samples.history[keep]
    positives = [p for p, ok in zip(samples.positives, keep) if ok]
    top = max(ks)
    live = (f"recall@{top}",
            lambda start, items: metrics.session_recall_values(items, positives[start : start + len(items)], top))
    ranked = _ranked_lists(recommend, history, max(m, *ks), batch_size, progress, desc, live)
    per = {f"session_recall@{m}": metrics.session_recall_values(ranked, positives, m),
           f"session_ndcg@{m}": metrics.session_ndcg_values(ranked, positives, m)}
    for k in ks:
        per[f"recall@{k}"] = metrics.session_recall_values(ranked, positives, k)
        per[f"ndcg@{k}"] = metrics.session_ndcg_values(ranked, positives, k)
    if values is not None:
        values.update(per)
    return {"n_sessions": float(len(positives))} | {name: metrics.mean_ignoring_nan(v) for name, v in per.items()}
