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

import polars as pl

from onerec.data.config import DataConfig
from onerec.data.history import attach_history

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


def _sequences(positives: pl.DataFrame) -> pl.DataFrame:
    """Per user: ``seq`` items, ``seq_ts``, ``n`` and ``n_prior`` (leading prior positives)."""
    return positives.group_by("user", maintain_order=True).agg(
        pl.col("item").alias("seq"),
        pl.col("ts_ms").alias("seq_ts"),
        pl.len().alias("n"),
        pl.col("prior").sum().alias("n_prior"),
    )


def _slice_samples(seqs: pl.DataFrame, start: pl.Expr, end: pl.Expr, cfg: DataConfig) -> pl.DataFrame:
    """Samples with target ``seq[start:end]`` and history the last max_history items of ``seq[:start]``."""
    h0 = pl.max_horizontal(start - cfg.max_history, pl.lit(0))
    hlen = pl.min_horizontal(start, pl.lit(cfg.max_history))
    return seqs.select(
        "user",
        pl.col("seq").list.slice(h0, hlen).alias("history"),
        pl.col("seq_ts").list.slice(h0, hlen).alias("history_ts"),
        pl.col("seq").list.slice(start, end - start).alias("target"),
        pl.col("seq_ts").list.slice(start, end - start).alias("target_ts"),
        pl.col("seq_ts").list.get(start).alias("ts_ms"),
    )


def leave_one_out_samples(positives: pl.DataFrame, cfg: DataConfig) -> pl.DataFrame:
    """TIGER leave-one-out samples from ``positives`` (user, item, ts_ms, prior; sorted, prior first)."""
    seqs = _sequences(positives).filter((pl.col("n") - pl.col("n_prior")) >= 3)
    n = pl.col("n")
    test = _slice_samples(seqs, n - 1, n, cfg).with_columns(pl.lit("test").alias("split"))
    valid = _slice_samples(seqs, n - 2, n - 1, cfg).with_columns(pl.lit("valid").alias("split"))
    train = _window_rows(seqs, pl.max_horizontal(pl.lit(1), pl.col("n_prior")), n - 2, cfg)
    train = train.with_columns(pl.lit("train").alias("split"))
    return pl.concat([train, valid, test], how="vertical").drop("target_ts").with_columns(
        pl.lit(-1, pl.Int64).alias("session"), pl.lit(True).alias("high_quality"),
        pl.col("target").list.eval(pl.lit(True)).alias("target_positive"),
    )


def _window_rows(seqs: pl.DataFrame, first: pl.Expr, stop: pl.Expr, cfg: DataConfig) -> pl.DataFrame:
    """Windows starting at first, first+stride, ... < stop, each target up to window_items before stop."""
    starts = seqs.with_columns(
        pl.int_ranges(first, pl.max_horizontal(first, stop), cfg.window_stride).alias("_p"),
        stop.alias("_stop"),
    ).explode("_p").drop_nulls("_p")
    end = pl.min_horizontal(pl.col("_p") + cfg.window_items, pl.col("_stop"))
    return _slice_samples(starts, pl.col("_p"), end, cfg)


def window_samples(positives: pl.DataFrame, cfg: DataConfig, cuts: dict[str, int | None]) -> pl.DataFrame:
    """Temporal split without sessions: next-``window_items`` windows over each user's positives.

    A window's split is its first target's; target items at or after that split's end are cut off.
    """
    seqs = _sequences(positives)
    rows = _window_rows(seqs, pl.max_horizontal(pl.lit(1), pl.col("n_prior")), pl.col("n"), cfg)
    rows = rows.with_columns(split_expr(cuts).alias("split")).filter(pl.col("split") != "none")
    ends = {"train": cuts.get("valid_start") or cuts.get("test_start"), "valid": cuts.get("test_start"),
            "test": cuts.get("test_end")}
    parts = []
    for name, end in ends.items():
        part = rows.filter(pl.col("split") == name)
        if end is not None:
            keep = pl.col("target_ts").list.eval((pl.element() < end).cast(pl.Int32)).list.sum()
            part = part.with_columns(pl.col("target").list.head(keep))
        parts.append(part)
    return pl.concat(parts).drop("target_ts").with_columns(
        pl.lit(-1, pl.Int64).alias("session"), pl.lit(True).alias("high_quality"),
        pl.col("target").list.eval(pl.lit(True)).alias("target_positive"),
    )
