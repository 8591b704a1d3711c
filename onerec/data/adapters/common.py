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
        raise OnerecError(f"{path}: cannot read ({_first_line(err)})") from None


def require_columns(df: pl.DataFrame, columns: list[str] | tuple[str, ...], path: Path | str) -> None:
    """Raise when a column is missing (names the first missing one and the file)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise OnerecError(f"{path}: missing column {missing[0]!r} ({len(missing)} missing; has {df.columns[:12]})")


def scan_table(path: Path, **kwargs: object) -> pl.LazyFrame:
    """A lazy view of one CSV / Parquet file (plain CSV and Parquet are scanned, .gz is read first)."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    if path.suffix == ".gz":
        return read_table(path, **kwargs).lazy()
    try:
        if path.suffix == ".parquet":
            return pl.scan_parquet(path)
        return pl.scan_csv(path, infer_schema_length=10000, **kwargs)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read ({_first_line(err)})") from None


def column_names(lf: pl.LazyFrame, path: Path | str) -> list[str]:
    """The columns of a lazy table; an unreadable file is an OnerecError."""
    try:
        return lf.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def canonical_log(frame: pl.DataFrame | pl.LazyFrame, mapping: dict[str, str], path: Path | str) -> pl.DataFrame:
    """Select and rename ``mapping`` (canonical -> source column) into the canonical schema.

    ``user`` and ``item`` keep their dtype (as ``user_orig`` / ``item_orig``); every LOG_SCHEMA column not
    mapped is null. A mapped value that is NaN, empty, not a number, or fractional where an integer is
    expected is an error naming the column and the row count; ``ts_ms`` must be mapped.
    The source's other columns are folded into one ``src_hash`` column (so duplicate detection sees whole
    rows without carrying them); it is dropped after the quirk rules. One streaming pass over the file.
    """
    lf = frame.lazy()
    try:
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read ({_first_line(err)})") from None
    missing = [c for c in mapping.values() if c not in schema]
    if missing:
        raise OnerecError(f"{path}: missing column {missing[0]!r} ({len(missing)} missing; has {schema.names()[:12]})")
    exprs = [pl.col(mapping["user"]).alias("user_orig"), pl.col(mapping["item"]).alias("item_orig")]
    checks: list[tuple[str, str, str, pl.Expr]] = []  # (flag, column, problem, row flag)
    for key in ("user", "item"):
        checks.append((f"_null_{key}", mapping[key], "{n} empty rows", pl.col(mapping[key]).is_null()))
    for name, dtype in LOG_SCHEMA.items():
        if name not in mapping:
            exprs.append(pl.lit(None, dtype).alias(name))
            continue
        col, src_type = mapping[name], schema[mapping[name]]
        src = pl.col(col)
        out = src.cast(dtype, strict=False)
        exprs.append(out.alias(name))
        if src_type.is_float():
            checks.append((f"_nan_{name}", col, "{n} NaN rows", src.is_nan().fill_null(False)))
        checks.append((f"_null_{name}", col, "{n} empty (NaN) rows", src.is_null()))
        checks.append((f"_bad_{name}", col, "{n} rows that are not " + str(dtype), out.is_null() & src.is_not_null()))
        if dtype.is_integer() and src_type.is_float():
            checks.append((f"_frac_{name}", col, "{n} non-integer rows", (src != src.floor()).fill_null(False)))
    extras = [c for c in schema.names() if c not in set(mapping.values())]
    if extras:  # one 64-bit hash of the other columns: exact-duplicate detection sees whole rows
        exprs.append(pl.struct(extras).hash(seed=0).alias("src_hash"))
    try:
        out_df = lf.select(*exprs, *[flag.alias(name) for name, _, _, flag in checks]).collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read ({_first_line(err)})") from None
    names = [name for name, _, _, _ in checks]
    counts = out_df.select(pl.col(names).sum()).row(0) if names else ()
    for (name, col, problem, _), count in zip(checks, counts):
        if count:
            raise OnerecError(f"{path}: column {col!r} has " + problem.format(n=count))
    return out_df.drop(names)


def concat_logs(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate per-file logs whose id dtypes may differ (int in one file, str in another)."""
    if len(frames) == 1:
        return frames[0]
    for key in ("user_orig", "item_orig"):
        if len({f[key].dtype for f in frames}) > 1:
            frames = [f.with_columns(pl.col(key).cast(pl.String)) for f in frames]
    return pl.concat(frames, how="diagonal_relaxed")
