"""Embeddings a user brings: keyed by item, every bad file a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.embed.external import read_external
from onerec.io import OnerecError

ITEMS = pl.DataFrame({"item": pl.Series(range(4), dtype=pl.Int32), "item_orig": ["a", "b", "c", "d"]})


def _parquet(path: Path, keys: list, vectors: list, key: str = "item_orig") -> Path:
    pl.DataFrame({key: keys, "embedding": vectors}).write_parquet(path)
    return path


def test_parquet_rows_follow_item_ids(tmp_path: Path) -> None:
    """A Parquet file in any row order, keyed by item_orig, gives row i = item i (extra ids dropped, counted)."""
    vec = np.arange(8, dtype=np.float64).reshape(4, 2)
    order = [2, 0, 3, 1]
    file = _parquet(tmp_path / "e.parquet", ["c", "a", "d", "b", "zz"], [vec[i].tolist() for i in order] + [[9.0, 9.0]])
    emb, info = read_external(file, ITEMS)
    np.testing.assert_array_equal(emb, vec.astype(np.float32), err_msg="rows not in item order")
    assert emb.dtype == np.float32 and info["extra_rows"] == 1, f"{emb.dtype} {info}"


def test_npy_ok(tmp_path: Path) -> None:
    """A float64 .npy (I, d) comes back as float32, unchanged."""
    np.save(tmp_path / "e.npy", np.ones((4, 3)))
    emb, _ = read_external(tmp_path / "e.npy", ITEMS)
    assert emb.shape == (4, 3) and emb.dtype == np.float32


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("nan", r"1 item rows hold NaN or inf \(first: item 2\)"),
        ("missing", r"1 of 4 items have no embedding \(first: item 3"),
        ("dim", r"dimension 2 != embed.external_dim 3"),
        ("ragged", r"ragged lengths"),
        ("duplicate", r"1 rows repeat an item"),
        ("npy_rows", r"5 rows, but items.parquet has 4 items"),
        ("no_key", r"no key column"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, case: str, pattern: str) -> None:
    """NaN, missing ids, wrong or ragged dimensions, duplicate keys, wrong row counts: one clear error each."""
    good = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    expect_dim = 0
    file = tmp_path / "e.parquet"
    if case == "nan":
        _parquet(file, list("abcd"), good[:2] + [[np.nan, 1.0]] + good[3:])
    elif case == "missing":
        _parquet(file, list("abc"), good[:3])
    elif case == "dim":
        _parquet(file, list("abcd"), good)
        expect_dim = 3
    elif case == "ragged":
        _parquet(file, list("abcd"), good[:3] + [[1.0]])
    elif case == "duplicate":
        _parquet(file, [0, 1, 2, 3, 1], good + [[0.0, 0.0]], key="item")
    elif case == "npy_rows":
        file = tmp_path / "e.npy"
        np.save(file, np.ones((5, 2)))
    elif case == "no_key":
        pl.DataFrame({"id": list("abcd"), "embedding": good}).write_parquet(file)
    with pytest.raises(OnerecError, match=pattern):
        read_external(file, ITEMS, expect_dim)
