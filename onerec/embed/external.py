"""Embeddings a user brings (``onerec embed --embeddings FILE``): read, key by item, check.

Accepted files
- ``.npy``: a 2-D numeric array (I, d), row i = item i (onerec's contiguous ids). No pickles.
- ``.parquet``: one row per item, keyed by ``item`` (onerec int id) or ``item_orig`` (the source's id,
  matched as a string against ``items.parquet``), with the vector in a list column (``embedding``, or
  the only list column) or spread over the remaining numeric columns (wide form, in column order).

Every problem is one clear error naming the file and the count: missing items, duplicated keys, ragged
or wrong dimension (``embed.external_dim`` > 0 fixes it), nulls, NaN/inf. Rows for ids that are not in
``items.parquet`` are dropped and counted (``extra_rows`` in ``embed.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from onerec.io import OnerecError


def _check_values(matrix: np.ndarray, path: Path, expect_dim: int) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[1] < 1:
        raise OnerecError(f"{path}: embeddings must be 2-D (items, dim), got shape {matrix.shape}")
    if expect_dim and matrix.shape[1] != expect_dim:
        raise OnerecError(f"{path}: embedding dimension {matrix.shape[1]} != embed.external_dim {expect_dim}")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise OnerecError(f"{path}: {int(bad.sum())} item rows hold NaN or inf (first: item {first})")
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _read_npy(path: Path, n_items: int) -> np.ndarray:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise OnerecError(f"{path}: cannot read as .npy ({err})") from None
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise OnerecError(f"{path}: embeddings must be real numbers, got dtype {matrix.dtype}")
    if matrix.ndim == 2 and matrix.shape[0] != n_items:
        raise OnerecError(f"{path}: {matrix.shape[0]} rows, but items.parquet has {n_items} items (row i = item i)")
    return matrix


def _vectors(frame: pl.DataFrame, key: str, path: Path) -> np.ndarray:
    """(R, d) float64 from a list column or from wide numeric columns."""
    lists = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array)) and c != key]
    column = "embedding" if "embedding" in lists else (lists[0] if len(lists) == 1 else None)
    if len(lists) > 1 and column is None:
        raise OnerecError(f"{path}: {len(lists)} list columns and none named 'embedding': {lists[:5]}")
    if column is not None:
        series = frame[column]
        nulls = int(series.is_null().sum())
        if nulls:
            raise OnerecError(f"{path}: column {column!r} is null in {nulls} rows")
        lengths = series.list.len().to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            raise OnerecError(
                f"{path}: column {column!r} has ragged lengths ({int((lengths != lengths[0]).sum())} rows differ "
                f"from {int(lengths[0])}; min {int(lengths.min())}, max {int(lengths.max())})"
            )
        flat = series.explode().cast(pl.Float64)
        if flat.null_count():
            raise OnerecError(f"{path}: column {column!r} holds {flat.null_count()} null values")
        return flat.to_numpy().reshape(len(lengths), int(lengths[0]) if len(lengths) else 0)
    wide = [c for c, t in frame.schema.items() if c != key and t.is_numeric()]
    if not wide:
        raise OnerecError(f"{path}: no embedding column (a list column 'embedding' or numeric columns)")
    values = frame.select(pl.col(wide).cast(pl.Float64))
    nulls = sum(values.null_count().row(0))
    if nulls:
        raise OnerecError(f"{path}: {nulls} null values in the embedding columns")
    return values.to_numpy()


def _read_parquet(path: Path, items: pl.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read as Parquet ({str(err).splitlines()[0]})") from None
    if "item" in frame.columns:
        key, ids = "item", frame["item"].cast(pl.Int64, strict=False)
        if ids.null_count():
            raise OnerecError(f"{path}: column 'item' has {ids.null_count()} null or non-integer ids")
    elif "item_orig" in frame.columns:
        if "item_orig" not in items.columns:
            raise OnerecError(f"{path}: keyed by 'item_orig' but items.parquet has no 'item_orig' column")
        key = "item_orig"
        lookup = items.select(pl.col("item_orig").cast(pl.String), pl.col("item").cast(pl.Int64))
        ids = frame.select(pl.col("item_orig").cast(pl.String)).join(lookup, on="item_orig", how="left")["item"]
    else:
        raise OnerecError(f"{path}: no key column 'item' (onerec id) or 'item_orig' (source id); has {frame.columns[:8]}")
    vectors = _vectors(frame, key, path)
    n_items = items.height
    ids_np = ids.fill_null(-1).to_numpy()
    known = (ids_np >= 0) & (ids_np < n_items)
    dup = int(len(ids_np[known]) - len(np.unique(ids_np[known])))
    if dup:
        raise OnerecError(f"{path}: {dup} rows repeat an item already given by column {key!r}")
    present = np.zeros(n_items, dtype=bool)
    present[ids_np[known]] = True
    if not present.all():
        first = int(np.flatnonzero(~present)[0])
        raise OnerecError(
            f"{path}: {int((~present).sum())} of {n_items} items have no embedding (first: item {first}; key {key!r})"
        )
    matrix = np.empty((n_items, vectors.shape[1]), dtype=np.float64)
    matrix[ids_np[known]] = vectors[known]
    return matrix, {"key": key, "extra_rows": int((~known).sum())}


def read_external(path: str | Path, items: pl.DataFrame, expect_dim: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """(I, d) float32 embeddings from ``path``, row i = item i, checked; and facts for ``embed.json``."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"embeddings file not found: {path}")
    if path.suffix == ".npy":
        matrix, info = _read_npy(path, items.height), {"key": "row"}
    elif path.suffix == ".parquet":
        matrix, info = _read_parquet(path, items)
    else:
        raise OnerecError(f"{path}: unsupported embeddings file (use .npy or .parquet)")
    matrix = _check_values(matrix, path, expect_dim)
    return matrix, {"file": str(path), **info}
