"""The popularity baseline returns the K most frequent training items, ties by lower id."""

from __future__ import annotations

import numpy as np

from onerec.evaluate.baselines.popularity import Popularity


def test_returns_most_frequent_training_items() -> None:
    """Counts 4:3, 2:3, 7:2, others <= 1 -> top 3 is [2, 4, 7] for every user (2 before 4 on the tie)."""
    train = [np.array([4, 2, 7, 1]), np.array([4, 2, 2, 4]), np.array([7, 0, 9])]
    pop = Popularity.fit(train, 10)
    top = pop(np.full((2, 3), -1), 3)
    assert top.tolist() == [[2, 4, 7], [2, 4, 7]], f"top {top.tolist()}"
