"""Helpers shared by the adapters: file discovery, table reading, column checks, the canonical log schema.

Design choices
- An adapter returns a :class:`RawData`: the log with the source's original ids (``user_orig``,
  ``item_orig`` in their native dtype) and canonical signal columns, plus side tables keyed the same way.
  Id remapping, quirks, positives, sessions and splits are source-independent and live elsewhere.
- Every read error becomes one :class:`OnerecError` line naming the file, the column and the row count.
- CSV files may be plain or gzip-compressed (polars reads both); Parquet is accepted where a CSV is.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import polars as pl

from onerec.io import OnerecError

# Canonical log columns (before id remapping) and their dtypes; signals a source lacks are null.
LOG_SCHEMA: dict[str, pl.DataType] = {
    "ts_ms": pl.Int64(),
    "request_id": pl.Int64(),
    "click": pl.Int8(),
    "watch_ms": pl.Int64(),
    "duration_ms": pl.Int64(),
    "long_view": pl.Int8(),
    "like": pl.Int8(),
    "follow": pl.Int8(),
    "comment": pl.Int8(),
    "share": pl.Int8(),
    "rating": pl.Float32(),
}


@dataclasses.dataclass
class RawData:
    """What an adapter read: the log (original ids), side tables and what it noticed."""

    interactions: pl.DataFrame  # user_orig, item_orig, LOG_SCHEMA columns, in file order
    items: pl.DataFrame | None  # item_orig + features (None: the source has no item table)
    users: pl.DataFrame | None  # user_orig + features
    random: pl.DataFrame | None = None  # random-exposure log, same columns
    prior: pl.DataFrame | None = None  # user_orig, item_orig, ts_ms: positives from before the log
    implicit: bool = False  # every logged row is a positive (Amazon reviews)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: dict[str, int] = dataclasses.field(default_factory=dict)


def find_files(folder: Path, pattern: str, what: str, required: bool = True) -> list[Path]:
    """Files in ``folder`` matching ``pattern`` (sorted); none and ``required`` -> OnerecError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnerecError(f"input folder not found: {folder}")
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not found and required:
        raise OnerecError(f"{folder}: no {what} file matching {pattern}")
    return found


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole text of a plain or .gz file (undecodable bytes replaced)."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise OnerecError(f"{path}: cannot read ({err})") from None
    return data.decode(encoding, errors="replace")


def read_table(path: Path, separator: str = ",", **kwargs: object) -> pl.DataFrame:
    """Read one CSV (plain or .gz) or Parquet file; unreadable content is an OnerecError."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, separator=separator, infer_schema_length=10000, **kwargs)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnerecError(f"{path}: cannot read ({first})") from None


def require_columns(df: pl.DataFrame, columns: list[str] | tuple[str, ...], path: Path | str) -> None:
    """Raise when a column is missing (names the first missing one and the file)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise OnerecError(f"{path}: missing column {missing[0]!r} ({len(missing)} missing; has {df.columns[:12]})")


def cast_numeric(df: pl.DataFrame, column: str, dtype: pl.DataType, path: Path | str) -> pl.Series:
    """``df[column]`` cast to ``dtype``; values that do not convert are an error naming the row count."""
    src = df[column]
    if src.dtype.is_float():
        nans = int(src.is_nan().sum())
        if nans:
            raise OnerecError(f"{path}: column {column!r} has {nans} NaN rows")
    out = src.cast(dtype, strict=False)
    bad = int((out.is_null() & src.is_not_null()).sum())
    if bad:
        example = src.filter(out.is_null() & src.is_not_null())[0]
        raise OnerecError(f"{path}: column {column!r} has {bad} rows that are not {dtype} (e.g. {example!r})")
    if dtype.is_integer() and src.dtype.is_float():
        frac = int(((src - src.floor()).abs() > 0).fill_null(False).sum())
        if frac:
            raise OnerecError(f"{path}: column {column!r} has {frac} non-integer rows")
    return out


def canonical_log(df: pl.DataFrame, mapping: dict[str, str], path: Path | str) -> pl.DataFrame:
    """Select and rename ``mapping`` (canonical -> source column) into the canonical schema.

    ``user`` and ``item`` keep their dtype (as ``user_orig`` / ``item_orig``); every LOG_SCHEMA column not
    mapped is null. Non-numeric signal values are an error; ``ts_ms`` must be mapped and never empty.
    The source's other columns follow as ``src_<name>``: duplicate detection sees whole rows; they are
    dropped after the quirk rules.
    """
    require_columns(df, list(mapping.values()), path)
    cols: dict[str, pl.Series] = {
        "user_orig": df[mapping["user"]].alias("user_orig"),
        "item_orig": df[mapping["item"]].alias("item_orig"),
    }
    for name, dtype in LOG_SCHEMA.items():
        if name in mapping:
            cols[name] = cast_numeric(df, mapping[name], dtype, path).alias(name)
            nulls = cols[name].null_count()
            if nulls:
                raise OnerecError(f"{path}: column {mapping[name]!r} has {nulls} empty (NaN) rows")
        else:
            cols[name] = pl.Series(name, [None] * df.height, dtype=dtype)
    for key in ("user_orig", "item_orig"):
        nulls = cols[key].null_count()
        if nulls:
            raise OnerecError(f"{path}: column {mapping[key.removesuffix('_orig')]!r} has {nulls} empty rows")
    nulls = cols["ts_ms"].null_count()
    if nulls:
        raise OnerecError(f"{path}: column {mapping.get('ts_ms', 'ts_ms')!r} has {nulls} empty rows")
    used = set(mapping.values())
    extras = [df[c].alias(f"src_{c}") for c in df.columns if c not in used]
    return pl.DataFrame(list(cols.values()) + extras)


def concat_logs(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate per-file logs whose id dtypes may differ (int in one file, str in another)."""
    if len(frames) == 1:
        return frames[0]
    for key in ("user_orig", "item_orig"):
        if len({f[key].dtype for f in frames}) > 1:
            frames = [f.with_columns(pl.col(key).cast(pl.String)) for f in frames]
    return pl.concat(frames, how="diagonal_relaxed")
