"""``onerec data prepare``: adapter -> quirks -> ids -> positives -> sessions -> splits -> samples -> files.

Design choices
- Source-independent after the adapter: every rule below works on the canonical log (RawData).
- Quirks are handled by configurable rules and counted in ``summary.json["quirks"]``:
  exact duplicate rows (``exact_duplicates``: drop | keep | error), rows repeating a
  (user, item, ts_ms) key with different values (``repeated_keys``: keep_last | keep_first | keep_all |
  error; "last" is the file order), ``duration_ms == 0`` (``zero_duration``: unknown -> null, drop, keep),
  ids absent from the side tables (``missing_side``: error | drop | keep with null features).
  Negative watch time or duration is always an error (it has no meaning to repair).
- Ids: users and items are numbered 0..N-1 in the order of their original ids (numeric when the source's
  ids are numbers), over the log, the random log and the prior history; ``*_orig`` keeps the source id.
- Output goes to a temporary directory renamed into ``out`` last (``onerec.io.atomic_dir``): an
  interrupted run never leaves a directory that looks complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from onerec.config import to_dict
from onerec.data.adapters import RawData, read_source
from onerec.data.config import DataConfig
from onerec.data.history import positive_expr
from onerec.data.sessions import LABELS, assign_sessions, build_sessions, quality, resolve_mode
from onerec.data.splits import (
    SPLITS,
    leave_one_out_samples,
    session_samples,
    split_expr,
    temporal_cutoffs,
    window_samples,
)
from onerec.io import OnerecError, atomic_dir, write_json

INTERACTION_COLUMNS = ["user", "item", "ts_ms", "request_id", "session", *LABELS, "rating", "positive"]
SAMPLE_COLUMNS = ["sample", "user", "session", "split", "history", "history_ts", "target", "target_positive",
                  "ts_ms", "high_quality"]
SESSION_COLUMNS = ["session", "user", "ts_ms", "items", *LABELS, "positive", "n_positive", "watch_ms_total",
                   "high_quality", "split"]


def clean_log(log: pl.DataFrame, cfg: DataConfig, where: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """Apply the quirk rules to a canonical log; return it (with ``_row`` = file order) and the counts."""
    quirks: dict[str, int] = {"rows_read": log.height}
    for col in ("watch_ms", "duration_ms"):
        negative = int((log[col] < 0).sum())
        if negative:
            raise OnerecError(f"{where}: column {col} has {negative} negative rows")
    dup = log.height - log.unique(maintain_order=True).height
    quirks["exact_duplicate_rows"] = dup
    if dup and cfg.exact_duplicates == "error":
        raise OnerecError(f"{where}: {dup} rows are exact duplicates of another row (data.exact_duplicates=error)")
    if cfg.exact_duplicates == "drop":
        log = log.unique(maintain_order=True)
    quirks["exact_duplicate_rows_dropped"] = quirks["rows_read"] - log.height
    keys = ["user_orig", "item_orig", "ts_ms"]
    repeated = log.filter(pl.len().over(keys) > 1)
    quirks["repeated_key_rows"] = repeated.height
    quirks["repeated_keys"] = repeated.select(keys).n_unique() if repeated.height else 0
    if repeated.height and cfg.repeated_keys == "error":
        raise OnerecError(
            f"{where}: {quirks['repeated_keys']} (user, item, ts_ms) keys repeat with different values "
            f"({repeated.height} rows; data.repeated_keys=error)"
        )
    before = log.height
    if cfg.repeated_keys in ("keep_last", "keep_first"):
        log = log.unique(keys, keep="last" if cfg.repeated_keys == "keep_last" else "first", maintain_order=True)
    quirks["repeated_key_rows_dropped"] = before - log.height
    zero = log["duration_ms"] == 0
    quirks["zero_duration_rows"] = int(zero.sum())
    if cfg.zero_duration == "unknown":
        log = log.with_columns(pl.when(pl.col("duration_ms") != 0).then(pl.col("duration_ms")).alias("duration_ms"))
    elif cfg.zero_duration == "drop":
        log = log.filter((pl.col("duration_ms") != 0) | pl.col("duration_ms").is_null())
    quirks["zero_duration_rows_dropped"] = quirks["zero_duration_rows"] if cfg.zero_duration == "drop" else 0
    if log.height == 0:
        raise OnerecError(f"{where}: no rows left after the quirk rules")
    log = log.drop([c for c in log.columns if c.startswith("src_")])
    return log.with_row_index("_row"), quirks


def _align(a: pl.Series, b: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Give two id columns one dtype (String when they differ)."""
    if a.dtype == b.dtype:
        return a, b
    return a.cast(pl.String), b.cast(pl.String)


def _side_check(log: pl.DataFrame, side: pl.DataFrame | None, key: str, cfg: DataConfig, where: str,
                quirks: dict[str, int], label: str, side_file: str = "the side table") -> pl.DataFrame:
    """Apply ``missing_side`` to log rows whose ``key`` is absent from ``side``."""
    if side is None:
        return log
    ids, known = _align(log[key], side[key])
    absent = ~ids.is_in(known.unique().implode())
    n_rows = int(absent.sum())
    quirks[f"{label}_absent_from_side_rows"] = n_rows
    if n_rows and cfg.missing_side == "error":
        n_ids = ids.filter(absent).n_unique()
        raise OnerecError(f"{where}: {n_ids} {key.removesuffix('_orig')} ids ({n_rows} rows) are absent from "
                          f"{side_file}, e.g. {ids.filter(absent)[0]!r} (data.missing_side=error)")
    if n_rows and cfg.missing_side == "drop":
        log = log.filter(~absent)
    return log


def _id_map(values: list[pl.Series], name: str) -> pl.DataFrame:
    """Contiguous ids 0..N-1 for the distinct ``values`` in sorted original-id order."""
    dtypes = {v.dtype for v in values}
    if len(dtypes) > 1:
        values = [v.cast(pl.String) for v in values]
    orig = pl.concat([v.alias(f"{name}_orig") for v in values]).unique().sort()
    return pl.DataFrame({name: pl.int_range(orig.len(), dtype=pl.Int32, eager=True), f"{name}_orig": orig})


def _remap(df: pl.DataFrame, idmap: pl.DataFrame, name: str) -> pl.DataFrame:
    key = f"{name}_orig"
    if df[key].dtype != idmap[key].dtype:
        df = df.with_columns(pl.col(key).cast(idmap[key].dtype))
    return df.join(idmap, on=key, how="left", maintain_order="left").drop(key)


def _side_table(idmap: pl.DataFrame, side: pl.DataFrame | None, name: str) -> pl.DataFrame:
    """``items``/``users`` table: id, original id as string, then the source's features."""
    key = f"{name}_orig"
    table = idmap
    if side is not None:
        side = side.unique(key, keep="last", maintain_order=True)
        if side[key].dtype != idmap[key].dtype:
            side = side.with_columns(pl.col(key).cast(idmap[key].dtype))
        table = idmap.join(side, on=key, how="left", maintain_order="left")
    return table.with_columns(pl.col(key).cast(pl.String)).sort(name)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def prepare(cfg: DataConfig, folder: Path, out: Path, echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Read ``folder`` with ``cfg.source``'s adapter and write the data directory ``out``; return the summary."""
    t0 = time.perf_counter()
    raw: RawData = read_source(cfg, Path(folder))
    echo(f"read {raw.interactions.height:,} log rows in {time.perf_counter() - t0:.1f}s")
    where = raw.files.get("log_standard") or raw.files.get("log") or str(folder)
    log, quirks = clean_log(raw.interactions, cfg, where)
    quirks.update(raw.notes)
    item_file = next((raw.files[k] for k in ("video_features_basic", "datamaps", "movies", "items")
                      if k in raw.files), "the item table")
    user_file = next((raw.files[k] for k in ("user_features", "datamaps", "users") if k in raw.files),
                     "the user table")
    log = _side_check(log, raw.items, "item_orig", cfg, where, quirks, "item", item_file)
    log = _side_check(log, raw.users, "user_orig", cfg, where, quirks, "user", user_file)
    random = None
    if raw.random is not None and raw.random.height:
        random, rq = clean_log(raw.random, cfg, raw.files.get("log_random", "random log"))
        rwhere = raw.files.get("log_random", "random log")
        random = _side_check(random, raw.items, "item_orig", cfg, rwhere, rq, "item", item_file)
        random = _side_check(random, raw.users, "user_orig", cfg, rwhere, rq, "user", user_file)
        quirks.update({f"random_{k}": v for k, v in rq.items()})
    prior = raw.prior
    if prior is not None:
        users_seen = log["user_orig"].unique()
        pu, su = _align(prior["user_orig"], users_seen)
        keep = pu.is_in(su.implode())
        quirks["prior_rows_of_users_without_log"] = int((~keep).sum())
        prior = prior.filter(keep)
        prior = _side_check(prior, raw.items, "item_orig", cfg, raw.files.get("prior_history", "prior"),
                            quirks, "prior_item", item_file)
    user_map = _id_map([log["user_orig"]] + ([random["user_orig"]] if random is not None else []), "user")
    item_map = _id_map(
        [log["item_orig"]]
        + ([random["item_orig"]] if random is not None else [])
        + ([prior["item_orig"]] if prior is not None else []),
        "item",
    )
    implicit = raw.implicit
    lacking = {name for name in (*LABELS, "rating") if log[name].null_count() == log.height}
    log = _remap(_remap(log, user_map, "user"), item_map, "item")
    log = log.with_columns(positive_expr(cfg, implicit).alias("positive")).sort(["user", "ts_ms", "_row"])

    # --- sessions and splits ---
    mode = resolve_mode(cfg, log, implicit)
    log = assign_sessions(log, cfg, mode)
    sessions = build_sessions(log, cfg, lacking)
    sessions, report = quality(sessions, cfg, lacking)
    starts = sessions["ts_ms"] if sessions.height else log.filter("positive")["ts_ms"]
    cuts = temporal_cutoffs(cfg, starts)
    sessions = sessions.with_columns(split_expr(cuts).alias("split"))

    positives = log.filter("positive").select("user", "item", "ts_ms", pl.lit(False).alias("prior"))
    if prior is not None and prior.height:
        pr = _remap(_remap(prior, user_map, "user"), item_map, "item")
        positives = pl.concat([pr.select("user", "item", "ts_ms", pl.lit(True).alias("prior")), positives])
    positives = positives.sort(["user", "ts_ms"], maintain_order=True)
    if cfg.split == "leave_one_out":
        samples = leave_one_out_samples(positives, cfg)
    elif mode == "positives":
        samples = window_samples(positives, cfg, cuts)
    else:
        samples = session_samples(sessions, positives, cfg)
    n_before = samples.height
    samples = samples.filter(pl.col("history").list.len() >= cfg.min_history, pl.col("target").list.len() > 0)
    if samples.height == 0:
        raise OnerecError(f"{where}: no samples left after filtering ({n_before} before; "
                          f"data.min_history={cfg.min_history})")
    split_order = pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}, return_dtype=pl.Int8)
    samples = samples.sort(split_order, "user", "ts_ms", maintain_order=True).with_row_index("sample")
    samples = samples.with_columns(pl.col("sample").cast(pl.Int64)).select(SAMPLE_COLUMNS)

    interactions = log.select(INTERACTION_COLUMNS).with_columns(pl.col("user").cast(pl.Int32),
                                                                  pl.col("item").cast(pl.Int32))
    items = _side_table(item_map, raw.items, "item")
    users = _side_table(user_map, raw.users, "user")
    counts = samples.group_by("split").len()
    per_split = {s: int(counts.filter(pl.col("split") == s)["len"].sum()) for s in SPLITS}
    ses_split = sessions.group_by("split").agg(pl.len(), pl.col("high_quality").sum())
    summary: dict[str, Any] = {
        "source": cfg.source,
        "input": str(folder),
        "files": raw.files,
        "users": users.height,
        "items": items.height,
        "interactions": interactions.height,
        "interactions_random": 0 if random is None else random.height,
        "positives": int(interactions["positive"].sum()),
        "prior_positives": 0 if prior is None else prior.height,
        "signals_lacking": sorted(lacking),
        "time_range": {"first_ms": int(log["ts_ms"].min()), "last_ms": int(log["ts_ms"].max()),
                       "first": _iso(int(log["ts_ms"].min())), "last": _iso(int(log["ts_ms"].max()))},
        "quirks": quirks,
        "session_mode": mode,
        "sessions": {**report, "per_split": {r["split"]: {"built": r["len"], "kept": r["high_quality"]}
                                             for r in ses_split.iter_rows(named=True)}},
        "split": cfg.split,
        "cutoffs": {k: {"ms": v, "utc": _iso(v)} for k, v in cuts.items()},
        "samples": {**per_split, "total": samples.height, "dropped_by_min_history": n_before - samples.height,
                    "train_high_quality": int(samples.filter((pl.col("split") == "train")
                                                             & pl.col("high_quality")).height)},
    }
    with atomic_dir(Path(out)) as tmp:
        interactions.write_parquet(tmp / "interactions.parquet")
        if random is not None:
            rnd = _remap(_remap(random, user_map, "user"), item_map, "item")
            rnd = rnd.with_columns(positive_expr(cfg, implicit).alias("positive"),
                                   pl.lit(-1, pl.Int64).alias("session")).sort(["user", "ts_ms", "_row"])
            rnd.select(INTERACTION_COLUMNS).write_parquet(tmp / "interactions_random.parquet")
        items.write_parquet(tmp / "items.parquet")
        users.write_parquet(tmp / "users.parquet")
        sessions.select(SESSION_COLUMNS).write_parquet(tmp / "sessions.parquet")
        samples.write_parquet(tmp / "samples.parquet")
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "data_config.json", to_dict(cfg))
    return summary
