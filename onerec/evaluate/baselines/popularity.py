"""Popularity baseline: every user gets the K items seen most often in the training sequences.

Design choices
- Counts come from the training sequences only (for leave-one-out: ``i_1..i_{n-2}``), so no valid or
  test target leaks into the ranking.
- Ties are broken by the lower item id, so the list is deterministic.
- History items are not filtered (EVAL.md §1: no filtering).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Popularity:
    """A fixed ranking of all items by training frequency; ``__call__`` is a harness recommender."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.int64)  # (I,)
        # lexsort sorts by the last key first: count descending, then item id ascending
        self.order = np.lexsort((np.arange(len(self.counts)), -self.counts)).astype(np.int64)  # (I,)

    @classmethod
    def fit(cls, train_sequences: Sequence[np.ndarray], n_items: int) -> "Popularity":
        """Count each item's occurrences over ``train_sequences``."""
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_sequences]) if train_sequences else np.zeros(0, np.int64)
        return cls(np.bincount(flat[flat >= 0], minlength=n_items)[:n_items])

    def __call__(self, history: np.ndarray, k: int) -> np.ndarray:
        """The same top ``k`` items for every row of ``history`` (B, n). (B, k) int64."""
        top = self.order[:k]
        if len(top) < k:
            top = np.concatenate([top, np.full(k - len(top), -1, dtype=np.int64)])
        return np.tile(top, (len(history), 1))
