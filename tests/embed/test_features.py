"""Item features: field-normalised IDF bags, exact vocabulary, CSR slices."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from onerec.embed import EmbedConfig
from onerec.embed.features import build_features
from onerec.io import OnerecError


def _items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item": pl.Series([2, 0, 1, 3], dtype=pl.Int32),
            "item_orig": ["c", "a", "b", "d"],
            "tags": pl.Series([[1, 2], [2], None, [1, 3, 9]], dtype=pl.List(pl.Int32)),
            "author_id": [6, 5, 5, 6],
            "title": ["Toy Story (1995)", "toy boat", "x", "Story of a toy"],
            "duration_ms": [100, 2000, 300, None],
            "likes": [1.5, 7.0, 3.25, 9.0],
        }
    )


def test_each_field_is_one_unit_block() -> None:
    """Within an item, the weights of each non-numeric field have L2 norm 1 (the field weight)."""
    cfg = EmbedConfig(min_count=2, n_buckets=2, max_categories=1)
    feats = build_features(_items(), cfg)
    dense = feats.dense()
    field_of = np.array([tok.split("=")[0].split("#")[0] for tok in feats.vocab])
    for field in ("tags", "author_id", "title"):
        norms = np.linalg.norm(dense[:, field_of == field], axis=1)
        present = norms > 0
        assert present.any(), f"field {field} produced no token"
        np.testing.assert_allclose(norms[present], 1.0, rtol=1e-5, err_msg=f"field {field} block is not unit norm")
    numeric = np.linalg.norm(dense[:, np.isin(field_of, ["duration_ms", "likes"])], axis=1)
    assert numeric.max() <= 1.0 + 1e-5, f"numeric fields together exceed one unit: {numeric.max():.3f}"


def test_rare_tokens_dropped_and_vocab_sorted() -> None:
    """Tokens seen in fewer than min_count items are not in the vocabulary; ids follow sorted token order."""
    feats = build_features(_items(), EmbedConfig(min_count=2))
    assert "tags=9" not in feats.vocab and "title=boat" not in feats.vocab, f"rare token kept: {feats.vocab}"
    assert "title=toy" in feats.vocab and "tags=1" in feats.vocab, f"shared token lost: {feats.vocab}"
    assert feats.vocab == sorted(feats.vocab), "vocabulary ids are not in sorted token order"


def test_row_i_is_item_i() -> None:
    """Rows follow the item id, not the file order: permuting items.parquet gives the same features."""
    cfg = EmbedConfig(min_count=1)
    a = build_features(_items(), cfg).dense()
    b = build_features(_items().sample(fraction=1.0, shuffle=True, seed=3), cfg).dense()
    np.testing.assert_array_equal(a, b, err_msg="features depend on the row order of items.parquet")


def test_rows_slice_matches_dense() -> None:
    """``rows(items)`` gives exactly the CSR bags of those items, in the order asked."""
    feats = build_features(_items(), EmbedConfig(min_count=1))
    dense = feats.dense()
    order = np.array([3, 0, 3, 2], dtype=np.int64)
    tokens, weights, offsets = feats.rows(order)
    ends = np.append(offsets[1:], len(tokens))
    for b, item in enumerate(order):
        row = np.zeros(feats.n_tokens, np.float32)
        row[tokens[offsets[b] : ends[b]]] = weights[offsets[b] : ends[b]]
        np.testing.assert_array_equal(row, dense[item], err_msg=f"bag {b} is not item {item}")


def test_ids_must_be_contiguous() -> None:
    """An items table whose ids are not exactly 0..I-1 is a clear error naming the column."""
    bad = _items().with_columns(pl.col("item") + 1)
    with pytest.raises(OnerecError, match="'item' must hold exactly 0..3"):
        build_features(bad, EmbedConfig())
