"""Splits and samples: temporal (next session) and leave-one-out (TIGER), columnar.

Design choices
- Temporal: a session belongs to the split its first impression falls in: ``train`` before
  ``valid_start``, ``valid`` before ``test_start``, ``test`` before ``test_end``; sessions before
  ``train_start`` or at/after ``test_end`` get split ``none`` and no sample. Empty cut-offs default to
  quantiles of the session start times (the last ``test_fraction`` is test, the ``valid_fraction``
  before it valid), so any log splits without hand-picked dates.
- A session sample's history is the user's positives strictly before the session's first timestamp
  (``history.attach_history``), so nothing of the session or after it leaks in.
- Leave-one-out over each user's positive sequence ``i_1..i_n`` (time order; ties in log order):
  test = (``i_1..i_{n-1}``, ``i_n``), valid = (``i_1..i_{n-2}``, ``i_{n-1}``), train = windows starting at
  every ``window_stride``-th position p >= 1 of ``i_1..i_{n-2}`` with target ``i_p..`` up to
  ``window_items`` items, never past ``i_{n-2}`` (so no valid/test target is trained on; with
  ``window_items = 1`` this is exactly TIGER's "every prefix predicts its next item"). Users with
  n < 3 give no sample. Here history is by *position*, so items sharing a timestamp with the target
  (MovieLens ratings in the same second) stay in the history as the sequence file orders them.
  Prior-history positives (``prior``) are history only, never targets.
- Temporal split without impression sessions (Amazon/MovieLens windows): windows over a user's
  positives, the split of a window given by its first target's timestamp.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from onerec.data.config import DataConfig
from onerec.data.history import attach_history, gather_lists, user_offsets

SPLITS = ("train", "valid", "test")


def temporal_cutoffs(cfg: DataConfig, starts: pl.Series) -> dict[str, int | None]:
    """Cut-offs in epoch ms: from config, or quantiles of ``starts`` (session start times) when empty."""
    cuts = {name: cfg.cutoff_ms(name) for name in ("train_start", "valid_start", "test_start", "test_end")}
    if starts.len():
        if cuts["test_start"] is None:
            cuts["test_start"] = int(starts.quantile(1.0 - cfg.test_fraction, "lower"))
        if cuts["valid_start"] is None:
            q = int(starts.quantile(1.0 - cfg.test_fraction - cfg.valid_fraction, "lower"))
            cuts["valid_start"] = min(q, cuts["test_start"])
    return cuts


def split_expr(cuts: dict[str, int | None], col: str = "ts_ms") -> pl.Expr:
    """String split label from timestamp column ``col`` and cut-offs."""
    t = pl.col(col)
    inside = pl.lit(True)
    if cuts.get("train_start") is not None:
        inside = inside & (t >= cuts["train_start"])
    if cuts.get("test_end") is not None:
        inside = inside & (t < cuts["test_end"])
    valid_start = cuts.get("valid_start")
    test_start = cuts.get("test_start")
    label = pl.lit("train")
    if test_start is not None:
        label = pl.when(t >= test_start).then(pl.lit("test")).otherwise(label)
        if valid_start is not None:
            label = pl.when((t >= valid_start) & (t < test_start)).then(pl.lit("valid")).otherwise(label)
    return pl.when(inside).then(label).otherwise(pl.lit("none"))


def session_samples(sessions: pl.DataFrame, positives: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame:
    """One sample per session with a split: (history before the session, the session's items)."""
    queries = sessions.filter(pl.col("split") != "none").select(
        "user", "session", "split", "ts_ms", "high_quality",
        pl.col("items").alias("target"), pl.col("positive").alias("target_positive"),
    )
    return attach_history(queries, positives, cfg.max_history)


def _samples_at(positives: pl.DataFrame, rows: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame:
    """Samples for ``rows`` (user, _off, _p, _e): target = the user's positives [p, e), history = the last
    max_history before p (positions within the user's sequence; ``_off`` = the user's first row)."""
    off = rows["_off"].to_numpy()
    p = rows["_p"].to_numpy()
    e = rows["_e"].to_numpy()
    h0 = np.maximum(p - cfg.max_history, 0)
    return rows.select("user", *(["split"] if "split" in rows.columns else [])).with_columns(
        gather_lists(positives["item"], off + h0, p - h0).alias("history"),
        gather_lists(positives["ts_ms"], off + h0, p - h0).alias("history_ts"),
        gather_lists(positives["item"], off + p, e - p).alias("target"),
        pl.Series("ts_ms", positives["ts_ms"].to_numpy()[off + p]),
    )


def _window_rows(users: pl.DataFrame, first: pl.Expr, stop: pl.Expr, cfg: DataConfig) -> pl.DataFrame:
    """(user, _off, _p, _e): windows starting at first, first+stride, ... < stop, ending at most at stop."""
    rows = users.select(
        "user", "_off",
        pl.int_ranges(first, pl.max_horizontal(first, stop), cfg.window_stride).alias("_p"),
        stop.alias("_stop"),
    ).explode("_p").drop_nulls("_p")
    return rows.with_columns(pl.min_horizontal(pl.col("_p") + cfg.window_items, pl.col("_stop")).alias("_e"))


def _finish(samples: pl.DataFrame) -> pl.DataFrame:
    return samples.with_columns(
        pl.lit(-1, pl.Int64).alias("session"), pl.lit(True).alias("high_quality"),
        pl.col("target").list.eval(pl.lit(True)).alias("target_positive"),
    )


def leave_one_out_samples(positives: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame:
    """TIGER leave-one-out samples from ``positives`` (user, item, ts_ms, prior; sorted, prior first)."""
    users = user_offsets(positives).filter((pl.col("n") - pl.col("n_prior")) >= 3).sort("user")
    n = pl.col("n")
    train = _window_rows(users, pl.max_horizontal(pl.lit(1), pl.col("n_prior")), n - 2, cfg)
    valid = users.select("user", "_off", (n - 2).alias("_p"), (n - 1).alias("_e"))
    test = users.select("user", "_off", (n - 1).alias("_p"), n.alias("_e"))
    rows = pl.concat([
        train.select("user", "_off", "_p", "_e", pl.lit("train").alias("split")),
        valid.with_columns(pl.lit("valid").alias("split")),
        test.with_columns(pl.lit("test").alias("split")),
    ], how="vertical_relaxed")
    return _finish(_samples_at(positives, rows, cfg))


def window_samples(positives: pl.DataFrame, cfg: DataConfig, cuts: dict[str, int | None]) -> pl.DataFrame:
    """Temporal split without sessions: next-``window_items`` windows over each user's positives.

    A window's split is its first target's; target items at or after that split's end are cut off.
    """
    users = user_offsets(positives).sort("user")
    rows = _window_rows(users, pl.max_horizontal(pl.lit(1), pl.col("n_prior")), pl.col("n"), cfg)
    ts = positives["ts_ms"]
    rows = rows.with_columns(pl.Series("ts_ms", ts.to_numpy()[(rows["_off"] + rows["_p"]).to_numpy()]))
    rows = rows.with_columns(split_expr(cuts).alias("split")).filter(pl.col("split") != "none")
    ends = {"train": cuts.get("valid_start") or cuts.get("test_start"), "valid": cuts.get("test_start"),
            "test": cuts.get("test_end")}
    end_of = pl.col("split").replace_strict(ends, return_dtype=pl.Int64, default=None)
    # target positions p.._e-1 whose time is before the end of the window's split
    pos = rows.with_row_index("_w").select("_w", (pl.col("_off") + pl.int_ranges("_p", "_e")).alias("_i"),
                                          end_of.alias("_end")).explode("_i")
    pos = pos.with_columns(pl.Series("_t", ts.to_numpy()[pos["_i"].to_numpy()]))
    keep = pos.group_by("_w").agg(((pl.col("_t") < pl.col("_end")) | pl.col("_end").is_null()).sum().alias("_n"))
    rows = rows.with_row_index("_w").join(keep, on="_w", how="left").sort("_w")
    rows = rows.with_columns((pl.col("_p") + pl.col("_n")).alias("_e")).filter(pl.col("_e") > pl.col("_p"))
    return _finish(_samples_at(positives, rows.drop("ts_ms"), cfg))
