"""KuaiRand adapter (Pure, 1K, 27K and the simulator's world share this layout; plain or .gz files).

Design choices
- Files are found by glob, so official names (``log_standard_4_22_to_5_08_pure.csv``) and the simulator's
  (``log_standard_<start>_to_<end>_sim.csv``) both work: ``log_standard_*.csv*`` (all concatenated),
  ``log_random_*.csv*`` (kept apart: unbiased random exposure), ``video_features_basic_*.csv*``,
  ``video_features_statistic_*.csv*`` (a daily table with a ``date`` column is averaged per video),
  ``user_features_*.csv*``.
- A ``request_id`` column (the simulator writes one) is kept and drives sessions; else it is -1.
- Signals: is_click -> click, play_time_ms -> watch_ms, duration_ms, long_view, is_like -> like,
  is_follow -> follow, is_comment -> comment, is_forward -> share. No rating.
- Prior history (``user_recent_history_*.jsonl[.gz]``, the two weeks before the log): the lists
  ``long_view_last50`` (in order) followed by the items of ``like_last50`` not already in it become
  positives *before* the log. The file has no per-item times, so item j of a user's n prior positives
  gets ``ts_ms = min(last_time_ms, log_start - 1) - (n - 1 - j)``: strictly before every logged
  impression, order kept. ``data.prior_history = false`` ignores the file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from onerec.data.adapters.common import (
    RawData,
    canonical_log,
    column_names,
    concat_logs,
    find_files,
    read_table,
    scan_table,
    require_columns,
)
from onerec.data.config import DataConfig
from onerec.io import OnerecError

LOG_MAP = {
    "user": "user_id",
    "item": "video_id",
    "ts_ms": "time_ms",
    "click": "is_click",
    "watch_ms": "play_time_ms",
    "duration_ms": "duration_ms",
    "long_view": "long_view",
    "like": "is_like",
    "follow": "is_follow",
    "comment": "is_comment",
    "share": "is_forward",
}


def _read_logs(paths: list[Path]) -> pl.DataFrame:
    frames = []
    for path in paths:
        df = scan_table(path)
        columns = column_names(df, path)
        mapping = dict(LOG_MAP)
        if "request_id" in columns:
            mapping["request_id"] = "request_id"
        log = canonical_log(df, mapping, path)
        if "request_id" not in columns:
            log = log.with_columns(pl.lit(-1, pl.Int64).alias("request_id"))
        frames.append(log)
    return concat_logs(frames)


def _read_items(folder: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    files: dict[str, str] = {}
    frames = []
    for path in find_files(folder, "video_features_basic_*.csv*", "video feature"):
        df = read_table(path)
        require_columns(df, ["video_id"], path)
        frames.append(df)
        files.setdefault("video_features_basic", str(path))
    basic = pl.concat(frames, how="diagonal_relaxed").unique("video_id", keep="last", maintain_order=True)
    renames = {"video_id": "item_orig"}
    if "video_duration" in basic.columns:
        renames["video_duration"] = "duration_ms"
    basic = basic.rename(renames)
    if "duration_ms" in basic.columns:
        basic = basic.with_columns(pl.col("duration_ms").cast(pl.Float64).round(0).cast(pl.Int64))
    if "tag" in basic.columns:
        basic = basic.with_columns(
            pl.col("tag").cast(pl.String).str.split(",").list.eval(
                pl.element().str.strip_chars().cast(pl.Int32, strict=False).drop_nulls()
            ).alias("tags")
        ).drop("tag")
    for path in find_files(folder, "video_features_statistic_*.csv*", "video statistic", required=False):
        stat = read_table(path)
        require_columns(stat, ["video_id"], path)
        if "date" in stat.columns:  # official daily table: one row per video and day -> mean per video
            num = [c for c, t in stat.schema.items() if t.is_numeric() and c not in ("video_id", "date")]
            stat = stat.group_by("video_id").agg(
                pl.len().alias("counts"), *[pl.col(c).mean() for c in num if c != "counts"]
            )
        stat = stat.unique("video_id", keep="last", maintain_order=True).rename({"video_id": "item_orig"})
        clash = [c for c in stat.columns if c in basic.columns and c != "item_orig"]
        stat = stat.rename({c: f"stat_{c}" for c in clash})
        basic = basic.join(stat.with_columns(pl.col("item_orig").cast(basic["item_orig"].dtype)),
                           on="item_orig", how="left")
        files["video_features_statistic"] = str(path)
        break
    return basic, files


def _read_prior(folder: Path, log_start_ms: int) -> tuple[pl.DataFrame | None, str | None]:
    paths = find_files(folder, "user_recent_history_*.jsonl*", "prior history", required=False)
    if not paths:
        return None, None
    path = paths[0]
    schema = {"user_id": pl.Int64, "last_time_ms": pl.Int64, "long_view_last50": pl.List(pl.Int64),
              "like_last50": pl.List(pl.Int64)}
    try:  # only the fields used (shown_last50 is not read)
        raw = pl.read_ndjson(path, schema=schema)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{path}: cannot read ({str(err).splitlines()[0]})") from None
    absent = [name for name in schema if raw.height and raw[name].null_count() == raw.height]
    if absent:
        raise OnerecError(f"{path}: missing field {absent[0]!r} in all {raw.height} lines")
    empty = raw["user_id"].null_count() + raw["last_time_ms"].null_count()
    if empty:
        raise OnerecError(f"{path}: {empty} lines lack user_id or last_time_ms")
    # long views in order (positions 0..n_lv-1), then likes not among them (positions n_lv..); likes are
    # few, so the big long-view list is exploded once with its timestamps and never joined or copied
    lk = raw.filter(pl.col("like_last50").list.len() > 0).select(
        "user_id", pl.col("like_last50").alias("item"), pl.col("long_view_last50").alias("lv"),
    ).explode("item").drop_nulls("item")
    lk = lk.filter(~pl.col("item").is_in(pl.col("lv")).fill_null(False)).drop("lv")
    lk = lk.unique(["user_id", "item"], keep="first", maintain_order=True)
    lk = lk.with_columns(pl.int_range(pl.len()).over("user_id").alias("pos"))
    n_lk = lk.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("n_lk"))
    users = raw.join(n_lk, on="user_id", how="left", maintain_order="left").select(
        "user_id",
        pl.col("long_view_last50").alias("item"),
        pl.col("long_view_last50").list.len().fill_null(0).cast(pl.Int64).alias("n_lv"),
        pl.col("n_lk").fill_null(0),
        pl.min_horizontal(pl.col("last_time_ms"), pl.lit(log_start_ms - 1)).alias("base"),
    )
    # item j of n prior positives: ts = base - (n - 1 - j)
    last = pl.col("base") - pl.col("n_lv") - pl.col("n_lk") + 1  # ts of position 0
    lv = users.select(
        "user_id", "item", pl.int_ranges(last, last + pl.col("n_lv")).alias("ts_ms"),
    ).explode("item", "ts_ms").drop_nulls("item")
    lk = lk.join(users.select("user_id", (last + pl.col("n_lv")).alias("t0")), on="user_id", how="left",
                 maintain_order="left").select("user_id", "item", (pl.col("t0") + pl.col("pos")).alias("ts_ms"))
    prior = pl.concat([lv, lk], rechunk=False)
    return prior.select(
        pl.col("user_id").alias("user_orig"), pl.col("item").alias("item_orig"), pl.col("ts_ms").cast(pl.Int64)
    ), str(path)


def read(cfg: DataConfig, folder: Path) -> RawData:
    """Read a KuaiRand-layout folder."""
    folder = Path(folder)
    log_paths = find_files(folder, "log_standard_*.csv*", "log_standard_*")
    interactions = _read_logs(log_paths)
    if interactions.height == 0:
        raise OnerecError(f"{log_paths[0]}: the log has no rows")
    random_paths = find_files(folder, "log_random_*.csv*", "log_random_*", required=False)
    random = _read_logs(random_paths) if random_paths else None
    items, files = _read_items(folder)
    user_paths = find_files(folder, "user_features_*.csv*", "user feature")
    users = pl.concat([read_table(p) for p in user_paths], how="diagonal_relaxed")
    require_columns(users, ["user_id"], user_paths[0])
    users = users.unique("user_id", keep="last", maintain_order=True).rename({"user_id": "user_orig"})
    files.update({"log_standard": ",".join(map(str, log_paths)), "user_features": str(user_paths[0])})
    if random_paths:
        files["log_random"] = ",".join(map(str, random_paths))
    prior = None
    if cfg.prior_history:
        log_start = int(interactions["ts_ms"].min())
        if random is not None and random.height:
            log_start = min(log_start, int(random["ts_ms"].min()))
        prior, prior_path = _read_prior(folder, log_start)
        if prior_path:
            files["prior_history"] = prior_path
    return RawData(interactions=interactions, items=items, users=users, random=random, prior=prior, files=files)
