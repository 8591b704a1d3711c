"""Pure metrics for the reward model: ROC AUC, Spearman correlation, reliability (calibration) bins and plot.

Design choices
- AUC is the Mann-Whitney statistic with average ranks for ties (a constant score gives exactly 0.5);
  NaN labels/scores are dropped first; AUC is NaN when only one class is present.
- Spearman = Pearson correlation of average ranks (ties averaged), NaN when a side is constant.
- Reliability bins are equal-width on the predicted probability; empty bins are omitted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onerec.io import atomic_path


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1.0
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 ``labels`` against ``scores`` (NaN pairs dropped; NaN if one class only)."""
    labels, scores = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
    keep = ~(np.isnan(labels) | np.isnan(scores))
    labels, scores = labels[keep] > 0.5, scores[keep]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``a`` and ``b`` (NaN pairs dropped; NaN if either side is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Per non-empty equal-width bin: mean predicted probability, observed label mean, count; plus ECE."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    keep = ~(np.isnan(labels) | np.isnan(probs))
    labels, probs = labels[keep], probs[keep]
    bins = np.clip((probs * n_bins).astype(int), 0, n_bins - 1)
    pred, obs, count = [], [], []
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            pred.append(float(probs[sel].mean()))
            obs.append(float(labels[sel].mean()))
            count.append(int(sel.sum()))
    total = max(1, sum(count))
    ece = sum(c / total * abs(p - o) for p, o, c in zip(pred, obs, count))
    return {"predicted": pred, "observed": obs, "count": count, "ece": [float(ece)]}


def plot_reliability(curves: dict[str, dict[str, list[float]]], title: str, path: Path) -> None:
    """One reliability diagram (predicted vs observed, one line per model) written as PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    top = 0.0
    for name, curve in curves.items():
        ax.plot(curve["predicted"], curve["observed"], marker="o", label=f"{name} (ECE {curve['ece'][0]:.3f})")
        top = max([top, *curve["predicted"], *curve["observed"]])
    lim = min(1.0, max(0.05, top * 1.1))
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed session label mean")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
