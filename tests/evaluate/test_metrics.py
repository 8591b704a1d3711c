"""Metrics equal values worked out by hand (EVAL.md §1, §2, §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onerec.evaluate import metrics


def test_hit_ranks_by_hand() -> None:
    """The rank is the 1-based position of the target in the list, 0 when it is missing."""
    topk = np.array([[3, 1, 2], [5, 6, 7], [9, 8, 4]])
    ranks = metrics.hit_ranks(topk, np.array([1, 0, 4]))
    assert ranks.tolist() == [2, 0, 3], f"ranks {ranks.tolist()} != [2, 0, 3]"


def test_recall_and_ndcg_by_hand() -> None:
    """Ranks [1, 2, 0, 4] give R@2 = 2/4, R@5 = 3/4 and NDCG@5 = (1 + 1/log2 3 + 1/log2 5) / 4."""
    ranks = np.array([1, 2, 0, 4])
    assert metrics.recall_at_k(ranks, 2) == pytest.approx(0.5), "R@2"
    assert metrics.recall_at_k(ranks, 5) == pytest.approx(0.75), "R@5"
    expected = (1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(5)) / 4
    assert metrics.ndcg_at_k(ranks, 5) == pytest.approx(expected), "NDCG@5"
    # rank 4 lies beyond K = 3, so only two hits count at K = 3
    assert metrics.ndcg_at_k(ranks, 3) == pytest.approx((1.0 + 1.0 / math.log2(3)) / 4), "NDCG@3"


def test_session_recall_by_hand() -> None:
    """|G ∩ P| / min(|P|, m): 1 of 2 positives -> 1/2; 2 hits of 5 positives with m=3 -> 2/3; |P|=0 -> NaN."""
    generated = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    positives = [np.array([3, 10]), np.array([4, 6, 11, 12, 13]), np.array([], dtype=np.int64)]
    values = metrics.session_recall_values(generated, positives)
    assert values[0] == pytest.approx(0.5) and values[1] == pytest.approx(2 / 3), f"values {values}"
    assert math.isnan(values[2]), "an empty positive set must be undefined, not 0"
    assert metrics.mean_ignoring_nan(values) == pytest.approx((0.5 + 2 / 3) / 2), "mean skips undefined"


def test_session_ndcg_by_hand() -> None:
    """G = [1, 2, 3], P = {2, 3, 99}: DCG = 1/log2 3 + 1/log2 4, IDCG = 1 + 1/log2 3 + 1/log2 4."""
    values = metrics.session_ndcg_values(np.array([[1, 2, 3]]), [np.array([2, 3, 99])])
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert values[0] == pytest.approx(dcg / idcg), f"{values[0]} != {dcg / idcg}"


def test_repeats_and_invalid_never_score() -> None:
    """A session repeating a positive counts it once, and -1 slots never match: [5, 5, -1] vs {5, 7} -> 1/2."""
    values = metrics.session_recall_values(np.array([[5, 5, -1]]), [np.array([5, 7])])
    assert values[0] == pytest.approx(0.5), f"repeat counted twice: {values[0]}"
    ndcg = metrics.session_ndcg_values(np.array([[5, 5, -1]]), [np.array([5, 7])])
    assert ndcg[0] == pytest.approx(1 / (1 + 1 / math.log2(3))), f"repeat scored twice in NDCG: {ndcg[0]}"


def test_health_by_hand() -> None:
    """Two sessions [0,1,-1] and [2,2,3] of a 10-item catalogue: valid 5/6, duplicates 1/2, coverage 4/10."""
    sessions = np.array([[0, 1, -1], [2, 2, 3]])
    codes = np.array([[0, 0], [0, 1], [1, 2], [1, 3]] + [[2, 0]] * 6)
    h = metrics.health(sessions, 10, codes)
    assert h["valid_item_rate"] == pytest.approx(5 / 6), f"valid {h['valid_item_rate']}"
    assert h["duplicate_rate"] == pytest.approx(0.5), f"duplicates {h['duplicate_rate']}"
    assert h["item_coverage"] == pytest.approx(0.4), f"coverage {h['item_coverage']}"
    # generated codes: items 0,1,2,2,3 -> level 0 tokens [0,0,1,1,1] and level 1 tokens [0,1,2,2,3]
    p0 = np.array([2, 3]) / 5
    p1 = np.array([1, 1, 2, 1]) / 5
    expected = [float(-(p0 * np.log2(p0)).sum()), float(-(p1 * np.log2(p1)).sum())]
    assert h["code_entropy"] == pytest.approx(expected), f"entropy {h['code_entropy']} != {expected}"
