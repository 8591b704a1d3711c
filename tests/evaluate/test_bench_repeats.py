"""The hit-source analysis of benchmarks/bench_repeats.py: popularity groups and per-group hit counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "bench_repeats", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_repeats.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_popularity_groups_split_positives_in_thirds() -> None:
    """Each group holds about a third of the training positives, and every head item is more frequent than every tail item."""
    rng = np.random.default_rng(0)
    n_items = 200
    probs = 1.0 / np.arange(1, n_items + 1)  # Zipf-like
    seqs = [rng.choice(n_items, size=int(rng.integers(5, 30)), p=probs / probs.sum()) for _ in range(400)]
    groups = bench.popularity_groups(seqs, n_items)
    counts = np.bincount(np.concatenate(seqs), minlength=n_items)
    shares = np.array([counts[groups == g].sum() for g in range(3)]) / counts.sum()
    assert set(np.unique(groups)) == {0, 1, 2}
    assert np.all(np.abs(shares - 1 / 3) < 0.05), shares  # the boundary item alone may tip a group
    assert counts[groups == 0].min() >= counts[groups == 2].max()
    assert (groups == 0).sum() < (groups == 1).sum() < (groups == 2).sum()  # skewed: the head is a few items


def test_one_dominant_item_is_the_head() -> None:
    """An item holding more than a third of the positives alone is the head, never pushed into the torso."""
    seqs = [np.array([0] * 60 + [1] * 20 + [2] * 10 + [3] * 10)]
    groups = bench.popularity_groups(seqs, 5)
    assert groups.tolist() == [0, 1, 2, 2, 2]  # item 0 holds 60 %; item 1 starts at 60 % (torso), the rest past 2/3


def test_group_hits_counts_slots_and_hits() -> None:
    """Slots count every listed item by its group; hits count each positive found in the top k once."""
    groups = np.array([0, 0, 1, 2, 2])
    lists = np.array([[0, 3, 2, -1], [4, 1, 0, 2]])
    positives = [np.array([3, 2, 2]), np.array([2, 1])]
    out = bench.group_hits(lists, positives, groups, k=3)
    assert out["slots_head_torso_tail"] == [3, 1, 2]  # row 0: 0, 3, 2; row 1: 4, 1, 0
    assert out["hits_head_torso_tail"] == [1, 1, 1]  # row 0: 3 (tail), 2 (torso); row 1: 1 (head); 2 is beyond k
