"""Positive labels and positive histories (ONEREC.md §1), columnar.

Design choices
- ``positive`` = effectively watched OR explicitly engaged OR rated >= ``rating_threshold``:
  effective watch is ``long_view == 1`` / ``watch_ms >= watch_ratio * duration_ms`` /
  ``watch_ms >= watch_seconds * 1000`` (``positive_watch``); explicit is any of ``positive_explicit``.
  A signal the source lacks (null) never makes a row positive; an unknown duration (null) fails the
  ratio rule. Implicit-feedback sources (every logged row is a consumption) are all positive.
- A history is the user's positives strictly before a moment, oldest first, the last ``max_history``.
  It is computed with one as-of join (count of positives before the moment) and one list slice per
  query, never a Python loop. Positives with equal timestamps keep the log order.
"""

from __future__ import annotations

import polars as pl

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


def user_positive_lists(positives: pl.DataFrame) -> pl.DataFrame:
    """``positives`` (user, item, ts_ms, in order) -> one row per user: ``pos_items``, ``pos_ts`` lists."""
    return positives.group_by("user", maintain_order=True).agg(
        pl.col("item").alias("pos_items"), pl.col("ts_ms").alias("pos_ts")
    )


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
    q = q.with_columns(pl.col("_k").fill_null(0))
    lists = user_positive_lists(positives)
    q = q.join(lists, on="user", how="left")
    start = pl.max_horizontal(pl.col("_k") - max_history, pl.lit(0))
    length = pl.min_horizontal(pl.col("_k"), pl.lit(max_history))
    q = q.with_columns(
        pl.col("pos_items").list.slice(start, length).fill_null(pl.lit([], pl.List(pl.Int32))).alias("history"),
        pl.col("pos_ts").list.slice(start, length).fill_null(pl.lit([], pl.List(pl.Int64))).alias("history_ts"),
    )
    return q.sort("_q").drop("_q", "_k", "pos_items", "pos_ts")
