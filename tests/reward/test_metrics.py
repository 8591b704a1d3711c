"""Metrics of the reward stage: AUC, Spearman, reliability bins (hand-worked and brute-force checks)."""

from __future__ import annotations

import numpy as np

from onerec.reward.metrics import auc, rankdata, reliability, spearman


def test_auc_hand_worked() -> None:
    """AUC is 1 for a perfect ranking, 0 for a reversed one, 0.5 for a constant score, 0.75 for one swap."""
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0, "perfect ranking"
    assert auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0, "reversed ranking"
    assert auc(y, np.ones(4)) == 0.5, "constant score"
    assert auc(y, np.array([0.1, 0.85, 0.8, 0.9])) == 0.75, "one of four pairs swapped"


def test_auc_matches_pair_count() -> None:
    """AUC equals the share of (positive, negative) pairs ranked right, ties counting one half."""
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    s = rng.integers(0, 10, size=200).astype(float)  # many ties
    pos, neg = s[y], s[~y]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert abs(auc(y, s) - brute) < 1e-12, f"{auc(y, s)} != {brute}"


def test_auc_single_class_and_nan() -> None:
    """AUC is NaN with one class only; NaN labels are dropped."""
    assert np.isnan(auc(np.ones(5), np.arange(5.0))), "one class must give NaN"
    assert auc(np.array([0, 1, np.nan]), np.array([0.0, 1.0, -5.0])) == 1.0, "the NaN-labelled pair must be dropped"


def test_rankdata_and_spearman() -> None:
    """Ties get their average rank; Spearman is 1 under a monotone map and -1 under a decreasing one."""
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    x = np.random.default_rng(1).normal(size=50)
    assert abs(spearman(x, np.exp(x)) - 1.0) < 1e-12, "monotone map"
    assert abs(spearman(x, -x**3) + 1.0) < 1e-12, "decreasing map"
    assert np.isnan(spearman(x, np.ones(50))), "constant side"


def test_reliability_hand_worked() -> None:
    """Two bins at 0.05 and 0.95 with labels 0 and 1: each off by 0.05, so ECE = 0.05."""
    r = reliability(np.array([0, 0, 1, 1]), np.array([0.05, 0.05, 0.95, 0.95]), n_bins=10)
    assert r["count"] == [2, 2], r
    assert abs(r["ece"][0] - 0.05) < 1e-12, r
