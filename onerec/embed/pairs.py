"""Training positives and co-engagement pairs, never touching a validation or test target.

Design choices
- Training positives are ``interactions.parquet`` rows with ``positive`` that fall before every held-out
  target, by three rules applied together (counts of each go to ``embed.json``):
  1. per user: strictly before the first ``ts_ms`` of that user's ``valid``/``test`` samples (this is
     leave-one-out: Amazon's last two items are dropped, whatever their timestamps encode);
  2. globally: strictly before the first ``valid``/``test`` sample that comes from a real session
     (``session != -1``: a temporal split, KuaiRand), so no other user's future leaks in either;
  3. not inside a session whose ``split`` in ``sessions.parquet`` is ``valid``/``test``.
- With ``include_histories`` the histories of ``train`` samples (``history`` / ``history_ts``) join the
  positives, deduplicated on (user, item, ts_ms). They hold positives the log itself lacks (KuaiRand's
  prior two weeks, ``prior_history``), and every one of them precedes a training target; the three rules
  above still apply to them.
- A co-engagement pair (a, b): b is one of the same user's next ``window_items`` training positives
  after a, at most ``window_ms`` later (0 = any time), and b != a. Pairs keep their multiplicity (items
  engaged together often weigh more); beyond ``max_pairs`` a seeded uniform subsample is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from onerec.io import OnerecError

HELD_OUT = ("valid", "test")


def _require(df: pl.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise OnerecError(f"{where}: missing column {missing[0]!r} ({len(missing)} missing; has {df.columns[:12]})")


def _history_positives(samples: pl.DataFrame) -> pl.DataFrame:
    """(user, item, ts_ms, session=-1) from the histories of train samples."""
    _require(samples, ("history", "history_ts"), "samples.parquet")
    rows = samples.filter(pl.col("split") == "train").select("user", "history", "history_ts")
    rows = rows.explode(["history", "history_ts"]).drop_nulls()
    return rows.select(
        pl.col("user").cast(pl.Int32), pl.col("history").cast(pl.Int32).alias("item"),
        pl.col("history_ts").cast(pl.Int64).alias("ts_ms"), pl.lit(-1, pl.Int64).alias("session"),
    ).unique(maintain_order=True)


def train_positives(
    interactions: pl.DataFrame,
    samples: pl.DataFrame,
    sessions: pl.DataFrame | None = None,
    include_histories: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(user i32, item i32, ts_ms i64) positives usable for training, sorted by (user, ts_ms); and counts."""
    _require(interactions, ("user", "item", "ts_ms", "positive"), "interactions.parquet")
    _require(samples, ("user", "session", "split", "ts_ms"), "samples.parquet")
    pos = interactions.filter(pl.col("positive").fill_null(False)).select(
        pl.col("user").cast(pl.Int32), pl.col("item").cast(pl.Int32), pl.col("ts_ms").cast(pl.Int64),
        (pl.col("session") if "session" in interactions.columns else pl.lit(-1)).cast(pl.Int64).alias("session"),
    )
    counts: dict[str, Any] = {"positives": pos.height}
    if include_histories:
        extra = _history_positives(samples).join(pos, on=["user", "item", "ts_ms"], how="anti")
        counts["added_from_histories"] = extra.height
        pos = pl.concat([pos, extra])
    pos = pos.with_row_index("row")

    held = samples.filter(pl.col("split").is_in(HELD_OUT))
    per_user = held.group_by("user").agg(pl.col("ts_ms").min().alias("cut_ms"))
    pos = pos.join(per_user, on="user", how="left")
    keep = pl.col("cut_ms").is_null() | (pl.col("ts_ms") < pl.col("cut_ms"))
    counts["dropped_user_cutoff"] = pos.height - pos.filter(keep).height
    pos = pos.filter(keep).drop("cut_ms")

    session_held = held.filter(pl.col("session") != -1)
    global_cut = session_held["ts_ms"].min() if session_held.height else None
    counts["global_cutoff_ms"] = global_cut
    if global_cut is not None:
        before = pos.height
        pos = pos.filter(pl.col("ts_ms") < global_cut)
        counts["dropped_global_cutoff"] = before - pos.height

    if sessions is not None and sessions.height and "session" in interactions.columns:
        _require(sessions, ("session", "split"), "sessions.parquet")
        held_sessions = sessions.filter(pl.col("split").is_in(HELD_OUT)).select("session")
        before = pos.height
        pos = pos.join(held_sessions, on="session", how="anti")
        counts["dropped_held_out_session"] = before - pos.height

    pos = pos.sort(["user", "ts_ms", "row"]).select(
        pl.col("user").cast(pl.Int32), pl.col("item").cast(pl.Int32), pl.col("ts_ms").cast(pl.Int64)
    )
    counts["train_positives"] = pos.height
    return pos, counts


def co_engagement_pairs(
    positives: pl.DataFrame, window_items: int, window_ms: int, max_pairs: int, seed: int
) -> np.ndarray:
    """(P, 2) int64 pairs (a, b) of items engaged by the same user close in time; ``positives`` sorted."""
    user = positives["user"].to_numpy()
    item = positives["item"].to_numpy().astype(np.int64)
    ts = positives["ts_ms"].to_numpy()
    chunks = []
    for lag in range(1, window_items + 1):
        if lag >= len(item):
            break
        ok = (user[:-lag] == user[lag:]) & (item[:-lag] != item[lag:])
        if window_ms > 0:
            ok &= (ts[lag:] - ts[:-lag]) <= window_ms
        chunks.append(np.stack([item[:-lag][ok], item[lag:][ok]], axis=1))
    pairs = np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int64)
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


def item_popularity(positives: pl.DataFrame, n_items: int) -> np.ndarray:
    """(I,) int64 count of training positives per item."""
    return np.bincount(positives["item"].to_numpy(), minlength=n_items).astype(np.int64)
