"""Properties of the item <-> code map and the dedup token."""

from __future__ import annotations

import numpy as np

from onerec.tokenizer.codec import SemanticIds, assign_dedup, collision_rate


def test_dedup_makes_codes_one_to_one() -> None:
    """After the dedup token every item has a distinct code, and item -> code -> item is the identity."""
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 3, size=(200, 2))  # 9 codes for 200 items: many collisions
    ids = SemanticIds.from_levels(levels, 3)
    assert len(np.unique(ids.codes, axis=0)) == 200, "codes are not unique after dedup"
    back = ids.item_of(ids.codes)
    assert np.array_equal(back, np.arange(200)), "item -> code -> item is not the identity"


def test_dedup_is_zero_for_unique_codes_and_ranks_collisions() -> None:
    """A unique code gets dedup 0; k items sharing a code get 0..k-1 in item-id order."""
    levels = np.array([[0, 0], [1, 1], [0, 0], [2, 2], [0, 0]])
    dedup = assign_dedup(levels)
    assert dedup.tolist() == [0, 0, 1, 0, 2], f"unexpected dedup tokens {dedup.tolist()}"
    assert abs(collision_rate(levels) - 3 / 5) < 1e-12, "3 of 5 items share a code"


def test_unknown_codes_map_to_minus_one() -> None:
    """Codes no item holds, or with out-of-range tokens, map to item -1."""
    ids = SemanticIds.from_levels(np.array([[0, 1], [1, 0]]), 2)
    queries = np.array([[1, 1, 0], [0, 1, 1], [5, 0, 0], [-1, 0, 0], [0, 1, 0]])
    assert ids.item_of(queries).tolist() == [-1, -1, -1, -1, 0], "unknown code resolved to an item"


def test_save_load_round_trip(tmp_path) -> None:
    """codes.parquet + tokenizer.json reload to the same codes and level sizes."""
    rng = np.random.default_rng(1)
    ids = SemanticIds.from_levels(rng.integers(0, 4, size=(50, 3)), 4)
    ids.save(tmp_path, {"method": "test", "dim": 8})
    loaded = SemanticIds.load(tmp_path)
    assert np.array_equal(loaded.codes, ids.codes), "codes changed through the file"
    assert loaded.level_sizes == ids.level_sizes, "level sizes changed through the file"
