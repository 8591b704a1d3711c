"""Sessions (ONEREC.md §3): building them from a log and the high-quality filter.

Design choices
- Session rule, by ``session_mode`` (``auto`` picks the first that applies):
  ``request``: one session per (user, request_id) when the log has request ids (rows with -1 get no
  session); ``gap``: a user's consecutive impressions whose gaps are <= ``session_gap_s``, cut every
  ``session_max_items`` items (auto: when the log has impression signals, click or watch time);
  ``positives``: no impression sessions at all, the samples are windows of
  the next ``window_items`` positives (Amazon, MovieLens; see ``splits.window_samples``).
- Session ids are 0..S-1 in (user, first timestamp) order; ``interactions.session`` points to them.
- High quality (all rules must pass): ``>= hq_min_watched`` items watched (clicked, or positive with
  ``hq_watched_by = "positive"``), total watch time ``>= hq_min_watch_s``, ``>= hq_min_explicit`` items
  with an explicit interaction among ``hq_explicit``. A rule whose signal the source lacks entirely is
  skipped (and listed as skipped). The report gives, per rule, the sessions failing it on its own
  (``removed_by_rule``) and the sessions it removes when the rules apply in that order
  (``removed_in_order``), so the counts add up to built - kept.
- Everything is a polars expression over the sorted log: a cumulative sum marks session starts.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from onerec.data.config import DataConfig

LABELS = ("click", "watch_ms", "duration_ms", "long_view", "like", "follow", "comment", "share")


def resolve_mode(cfg: DataConfig, log: pl.DataFrame, implicit: bool) -> str:
    """The session rule that applies to ``log`` (``cfg.session_mode`` unless ``auto``)."""
    if cfg.session_mode != "auto":
        return cfg.session_mode
    if log.height and int(log["request_id"].max()) >= 0:
        return "request"
    impressions = any(log[name].null_count() < log.height for name in ("click", "watch_ms"))
    return "gap" if impressions and not implicit else "positives"


def assign_sessions(log: pl.DataFrame, cfg: DataConfig, mode: str) -> pl.DataFrame:
    """Add ``session`` (i64, -1 = none) to ``log`` sorted by (user, ts_ms)."""
    if mode == "positives":
        return log.with_columns(pl.lit(-1, pl.Int64).alias("session"))
    if mode == "request":
        has = pl.col("request_id") >= 0
        keyed = log.with_columns(pl.when(has).then(pl.struct("user", "request_id")).alias("_key"))
        # rank requests by their first impression so ids follow (user, time)
        first = (
            keyed.filter(has)
            .group_by("_key")
            .agg(pl.col("user").first(), pl.col("ts_ms").min().alias("_t0"), pl.col("_row").min().alias("_r0"))
            .sort("user", "_t0", "_r0")
            .with_row_index("session")
            .select("_key", pl.col("session").cast(pl.Int64))
        )
        out = keyed.join(first, on="_key", how="left", maintain_order="left")
        return out.with_columns(pl.col("session").fill_null(-1)).drop("_key")
    gap_ms = int(round(cfg.session_gap_s * 1000))
    new_user = pl.col("user") != pl.col("user").shift(1)
    new_gap = (pl.col("ts_ms") - pl.col("ts_ms").shift(1)) > gap_ms
    out = log.with_columns((new_user | new_gap).fill_null(True).cum_sum().alias("_run"))
    out = out.with_columns(pl.int_range(pl.len()).over("_run").alias("_pos"))
    start = (pl.col("_pos") % cfg.session_max_items) == 0
    return out.with_columns((start.cast(pl.Int64).cum_sum() - 1).alias("session")).drop("_run", "_pos")


def build_sessions(log: pl.DataFrame, cfg: DataConfig, lacking: set[str]) -> pl.DataFrame:
    """One row per session of ``log`` (sorted, with ``session`` and ``positive``): items and label lists.

    Also carries ``_watched`` / ``_engaged`` (items watched / explicitly engaged, per the quality rules),
    which :func:`quality` consumes and drops.
    """
    inside = log.filter(pl.col("session") >= 0)
    if cfg.hq_watched_by == "click" and "click" not in lacking:
        watched = (pl.col("click") == 1).fill_null(False)
    else:
        watched = pl.col("positive")
    present = [name for name in cfg.hq_explicit if name not in lacking]
    engaged = pl.any_horizontal([(pl.col(n) == 1).fill_null(False) for n in present]) if present else pl.lit(False)
    sessions = inside.group_by("session").agg(
        pl.col("user").first(),
        pl.col("ts_ms").min(),
        pl.col("item").alias("items"),
        *[pl.col(name) for name in LABELS],
        pl.col("positive"),
        pl.col("positive").sum().cast(pl.Int32).alias("n_positive"),
        pl.col("watch_ms").sum().alias("watch_ms_total"),
        watched.sum().cast(pl.Int32).alias("_watched"),
        engaged.sum().cast(pl.Int32).alias("_engaged"),
    )
    fixes = [pl.lit(None, pl.List(log.schema[name])).alias(name) for name in LABELS if name in lacking]
    if "watch_ms" in lacking:
        fixes.append(pl.lit(None, pl.Int64).alias("watch_ms_total"))
    return sessions.with_columns(fixes).sort("session")


def quality(sessions: pl.DataFrame, cfg: DataConfig, lacking: set[str]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Add ``high_quality`` to ``sessions``; return it with the per-rule report."""
    rules: dict[str, pl.Expr] = {"min_watched": pl.col("_watched") >= cfg.hq_min_watched}
    skipped: list[str] = []
    if "watch_ms" in lacking:
        skipped.append("min_watch_time")
    else:
        rules["min_watch_time"] = pl.col("watch_ms_total").fill_null(0) >= cfg.hq_min_watch_s * 1000.0
    if [name for name in cfg.hq_explicit if name not in lacking]:
        rules["min_explicit"] = pl.col("_engaged") >= cfg.hq_min_explicit
    else:
        skipped.append("min_explicit")
    flags = sessions.select(**{name: expr.fill_null(False) for name, expr in rules.items()})
    report: dict[str, Any] = {"built": sessions.height, "removed_by_rule": {}, "removed_in_order": {},
                              "skipped_rules": skipped}
    alive = pl.Series("alive", [True] * sessions.height, dtype=pl.Boolean)
    for name in rules:
        ok = flags[name]
        report["removed_by_rule"][name] = int((~ok).sum())
        report["removed_in_order"][name] = int((alive & ~ok).sum())
        alive = alive & ok
    report["kept"] = int(alive.sum())
    return sessions.with_columns(alive.alias("high_quality")).drop("_watched", "_engaged"), report
