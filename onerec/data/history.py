"""Positive labels and positive histories (ONEREC.md §1), columnar.

Design choices
- ``positive`` = effectively watched OR explicitly engaged OR rated >= ``rating_threshold``:
  effective watch is ``long_view == 1`` / ``watch_ms >= watch_ratio * duration_ms`` /
  ``watch_ms >= watch_seconds * 1000`` (``positive_watch``); explicit is any of ``positive_explicit``.
  A signal the source lacks (null) never makes a row positive; an unknown duration (null) fails the
  ratio rule. Implicit-feedback sources (every logged row is a consumption) are all positive.
- A history is the user's positives strictly before a moment, oldest first, the last ``max_history``.
  It is computed with one as-of join (count k of positives before the moment) and one gather of the
  rows ``[off_u + max(k - n, 0), off_u + k)`` of the user-sorted positives, assembled into lists from
  offsets: memory is the output, not a copy of each user's sequence per query. No Python loop over rows.
  Positives with equal timestamps keep the log order.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from onerec.data.config import DataConfig


def positive_expr(cfg: DataConfig, implicit: bool = False) -> pl.Expr:
    """Boolean expression over canonical log columns: is this row a positive?"""
    if implicit:
        return pl.lit(True)
    if cfg.positive_watch == "long_view":
        watch = pl.col("long_view") == 1
    elif cfg.positive_watch == "ratio":
        watch = (pl.col("duration_ms") > 0) & (pl.col("watch_ms") >= cfg.watch_ratio * pl.col("duration_ms"))
    elif cfg.positive_watch == "seconds":
        watch = pl.col("watch_ms") >= cfg.watch_seconds * 1000.0
    else:
        watch = pl.lit(False)
    terms = [watch.fill_null(False)]
    terms += [(pl.col(name) == 1).fill_null(False) for name in cfg.positive_explicit]
    terms.append((pl.col("rating") >= cfg.rating_threshold).fill_null(False))
    return pl.any_horizontal(terms)


def gather_lists(values: pl.Series, starts: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Lists ``values[starts[j] : starts[j] + lengths[j]]`` for each j, built from offsets (no per-row copy
    of a user's whole sequence; memory = the output plus one int64 index per output element)."""
    lengths = np.asarray(lengths, dtype=np.int64)  # (Q,)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)  # (Q + 1,)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths)  # (total,)
    idx += np.arange(offsets[-1], dtype=np.int64)
    flat = values.to_numpy()[idx] if offsets[-1] else np.zeros(0, dtype=values.to_numpy().dtype)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(flat))
    return pl.Series(values.name, lists, dtype=pl.List(values.dtype))


def user_offsets(positives: pl.DataFrame) -> pl.DataFrame:
    """``positives`` sorted by user -> per user: ``_off`` (first row), ``n`` and ``n_prior`` (if a prior column)."""
    aggs = [pl.col("_r").first().alias("_off"), pl.len().alias("n")]
    if "prior" in positives.columns:
        aggs.append(pl.col("prior").sum().alias("n_prior"))
    return positives.with_row_index("_r").group_by("user").agg(aggs)


def attach_history(queries: pl.DataFrame, positives: pl.DataFrame, max_history: int) -> pl.DataFrame:
    """Add ``history`` / ``history_ts`` to ``queries`` (user, ts_ms, ...): positives strictly before ts_ms.

    ``positives``: user i32, item i32, ts_ms i64, sorted by (user, ts_ms) with ties in log order.
    Returns ``queries`` in its own row order with two list columns (empty lists when none).
    """
    ranked = positives.select("user", "ts_ms").with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("user").alias("_k")
    )
    # the count of positives at or before each distinct (user, ts): the last rank of that timestamp
    marks = ranked.group_by("user", "ts_ms").agg(pl.col("_k").max()).sort("ts_ms")
    q = queries.with_row_index("_q").sort("ts_ms")
    q = q.join_asof(marks, on="ts_ms", by="user", strategy="backward", allow_exact_matches=False,
                    check_sortedness=False)
    q = q.join(user_offsets(positives).select("user", "_off"), on="user", how="left").sort("_q")
    k = q["_k"].fill_null(0).to_numpy()  # (Q,) positives before the query
    first = np.maximum(k - max_history, 0)
    start = q["_off"].fill_null(0).to_numpy() + first
    return q.drop("_q", "_k", "_off").with_columns(
        gather_lists(positives["item"], start, k - first).alias("history"),
        gather_lists(positives["ts_ms"], start, k - first).alias("history_ts"),
    )
