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
- Duplicate detection hashes each row (or key) to 64 bits and compares exactly only the rows whose hash
  repeats: exact results at the memory of one u64 per row.
- Session ids and cut-offs are computed over the whole log; sessions and samples are then built for
  consecutive blocks of users (``block_rows`` log rows each) and appended to their Parquet files, so
  peak memory does not grow with the number of samples (10M log rows: 2.5 GB).
- A random-exposure log (KuaiRand ``log_random_*``) with request ids gets request sessions of its own in
  ``sessions_random.parquet`` (for the reward model); it never enters sessions, samples or splits' counts.
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
    first = _first_of_equal(log, log.columns)
    dup = int((~first).sum())
    quirks["exact_duplicate_rows"] = dup
    if dup and cfg.exact_duplicates == "error":
        raise OnerecError(f"{where}: {dup} rows are exact duplicates of another row (data.exact_duplicates=error)")
    if dup and cfg.exact_duplicates == "drop":
        log = log.filter(first)
    del first
    quirks["exact_duplicate_rows_dropped"] = quirks["rows_read"] - log.height
    keys = ["user_orig", "item_orig", "ts_ms"]
    keep = "last" if cfg.repeated_keys == "keep_last" else "first"
    chosen = _first_of_equal(log, keys, keep)
    n_extra = int((~chosen).sum())
    repeated = log.filter(_first_of_equal(log, keys, "first") != _first_of_equal(log, keys, "last"))
    quirks["repeated_key_rows"] = repeated.height
    quirks["repeated_keys"] = repeated.select(keys).n_unique() if repeated.height else 0
    del repeated
    if n_extra and cfg.repeated_keys == "error":
        raise OnerecError(
            f"{where}: {quirks['repeated_keys']} (user, item, ts_ms) keys repeat with different values "
            f"({quirks['repeated_key_rows']} rows; data.repeated_keys=error)"
        )
    before = log.height
    if n_extra and cfg.repeated_keys in ("keep_last", "keep_first"):
        log = log.filter(chosen)
    del chosen
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


def _first_of_equal(log: pl.DataFrame, columns: list[str], keep: str = "first") -> pl.Series:
    """Bool mask: the first (or last) row of each group of rows equal on ``columns``.

    A 64-bit hash of the columns finds candidate groups cheaply; only rows whose hash repeats are compared
    exactly, so the result is exact and memory stays near one u64 per row.
    """
    h = log.select(pl.struct(columns).hash(seed=0)).to_series()
    mask = h.is_duplicated()
    out = pl.Series("first", [True] * log.height, dtype=pl.Boolean)
    if not mask.any():
        return out
    idx = mask.arg_true()
    sub = log.select(columns)[idx]
    picked = sub.select(pl.struct(columns).is_first_distinct() if keep == "first"
                        else pl.struct(columns).is_last_distinct()).to_series()
    return out.scatter(idx, picked)


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
    mapping = pl.Series(idmap[key]), pl.Series(idmap[name])
    return df.with_columns(pl.col(key).replace_strict(*mapping, return_dtype=pl.Int32).alias(name)).drop(key)


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
    raw.interactions = log.clear()  # release the uncleaned rows (memory)
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
        raw.random = None
        rwhere = raw.files.get("log_random", "random log")
        random = _side_check(random, raw.items, "item_orig", cfg, rwhere, rq, "item", item_file)
        random = _side_check(random, raw.users, "user_orig", cfg, rwhere, rq, "user", user_file)
        quirks.update({f"random_{k}": v for k, v in rq.items()})
    prior, raw.prior = raw.prior, None
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
    echo(f"cleaned the log in {time.perf_counter() - t0:.1f}s")

    # --- sessions (ids over the whole log), cut-offs, then sessions and samples per block of users ---
    mode = resolve_mode(cfg, log, implicit)
    log = assign_sessions(log, cfg, mode)
    if mode == "positives":
        starts = log.filter("positive")["ts_ms"]
    else:
        starts = log.filter(pl.col("session") >= 0).group_by("session").agg(pl.col("ts_ms").min())["ts_ms"]
    cuts = temporal_cutoffs(cfg, starts)
    positives = log.filter("positive").select("user", "item", "ts_ms", pl.lit(False).alias("prior"))
    n_prior = 0
    if prior is not None and prior.height:
        pr = _remap(_remap(prior, user_map, "user"), item_map, "item")
        n_prior = pr.height
        positives = pl.concat([pr.select("user", "item", "ts_ms", pl.lit(True).alias("prior")), positives])
        del pr, prior
    positives = positives.sort(["user", "ts_ms"], maintain_order=True)
    echo(f"ids, positives and session ids in {time.perf_counter() - t0:.1f}s")

    interactions = log.select(INTERACTION_COLUMNS).with_columns(pl.col("user").cast(pl.Int32),
                                                                  pl.col("item").cast(pl.Int32))
    del log
    items = _side_table(item_map, raw.items, "item")
    users = _side_table(user_map, raw.users, "user")
    summary: dict[str, Any] = {
        "source": cfg.source,
        "input": str(folder),
        "files": raw.files,
        "users": users.height,
        "items": items.height,
        "interactions": interactions.height,
        "interactions_random": 0 if random is None else random.height,
        "positives": int(interactions["positive"].sum()),
        "prior_positives": n_prior,
        "signals_lacking": sorted(lacking),
        "time_range": {"first_ms": int(interactions["ts_ms"].min()), "last_ms": int(interactions["ts_ms"].max()),
                       "first": _iso(int(interactions["ts_ms"].min())),
                       "last": _iso(int(interactions["ts_ms"].max()))},
        "quirks": quirks,
        "session_mode": mode,
        "split": cfg.split,
        "cutoffs": {k: {"ms": v, "utc": _iso(v)} for k, v in cuts.items()},
    }
    with atomic_dir(Path(out)) as tmp:
        blocks = _Blocks(interactions, positives, cfg.block_rows)
        with _ParquetParts(tmp / "sessions.parquet") as ses_out, _ParquetParts(tmp / "samples.parquet") as smp_out:
            stats = _write_blocks(blocks, cfg, mode, cuts, lacking, ses_out, smp_out, echo)
        if stats["samples"]["total"] == 0:
            raise OnerecError(f"{where}: no samples left after filtering ({stats['samples']['before_filter']} "
                              f"before; data.min_history={cfg.min_history})")
        summary.update(stats)
        interactions.write_parquet(tmp / "interactions.parquet")
        if random is not None:
            rnd = _remap(_remap(random, user_map, "user"), item_map, "item")
            rnd = rnd.with_columns(positive_expr(cfg, implicit).alias("positive"),
                                   pl.lit(-1, pl.Int64).alias("session")).sort(["user", "ts_ms", "_row"])
            if mode == "request" and int(rnd["request_id"].max()) >= 0:
                rnd, summary["sessions_random"] = _random_sessions(rnd, cfg, cuts, lacking,
                                                                   stats["sessions"]["built"], tmp)
            rnd.select(INTERACTION_COLUMNS).write_parquet(tmp / "interactions_random.parquet")
        items.write_parquet(tmp / "items.parquet")
        users.write_parquet(tmp / "users.parquet")
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / "summary.json", summary)
        write_json(tmp / "data_config.json", to_dict(cfg))
    return summary


def _random_sessions(rnd: pl.DataFrame, cfg: DataConfig, cuts: dict[str, int | None], lacking: set[str],
                     first_id: int, tmp: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Request sessions of the random-exposure log -> ``sessions_random.parquet``; ids start at ``first_id``.

    Kept apart from ``sessions.parquet`` (no samples: the seed model and evaluation never see them); ids
    follow the standard sessions' so the two files never share one. Returns the log with its session ids.
    """
    rnd = assign_sessions(rnd.drop("session"), cfg, "request")
    rnd = rnd.with_columns(pl.when(pl.col("session") >= 0).then(pl.col("session") + first_id)
                           .otherwise(-1).alias("session"))
    sessions, _ = quality(build_sessions(rnd, cfg, lacking), cfg, lacking)
    sessions = sessions.with_columns(split_expr(cuts).alias("split")).select(SESSION_COLUMNS)
    sessions.write_parquet(tmp / "sessions_random.parquet")
    per_split = dict(sessions.group_by("split").len().sort("split").iter_rows())
    return rnd, {"built": sessions.height, "per_split": per_split}


class _Blocks:
    """Consecutive user ranges holding about ``block_rows`` log rows each, with their rows and positives."""

    def __init__(self, log: pl.DataFrame, positives: pl.DataFrame, block_rows: int) -> None:
        self.log, self.positives = log, positives
        per_user = log.group_by("user").len().sort("user")
        block = (per_user["len"].cum_sum() - 1) // block_rows
        self.bounds = per_user.with_columns(block.alias("b")).group_by("b").agg(
            pl.col("user").min().alias("lo"), pl.col("user").max().alias("hi")).sort("b")

    def __iter__(self):  # yields (log rows, positives) of each block; both frames are sorted by user
        n_blocks = self.bounds.height
        for k, (lo, hi) in enumerate(self.bounds.select("lo", "hi").iter_rows()):
            lo = None if k == 0 else lo  # the first/last block also take users with positives only
            hi = None if k == n_blocks - 1 else hi
            yield self._slice(self.log, lo, hi), self._slice(self.positives, lo, hi)

    @staticmethod
    def _slice(frame: pl.DataFrame, lo: int | None, hi: int | None) -> pl.DataFrame:
        users = frame["user"]
        a = 0 if lo is None else int(users.search_sorted(lo, "left"))
        b = frame.height if hi is None else int(users.search_sorted(hi, "right"))
        return frame.slice(a, b - a)


class _ParquetParts:
    """One Parquet file written a block at a time (bounded memory), closed on exit."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer = path, None

    def write(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        else:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def __enter__(self) -> _ParquetParts:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


def _write_blocks(blocks: _Blocks, cfg: DataConfig, mode: str, cuts: dict[str, int | None], lacking: set[str],
                  ses_out: _ParquetParts, smp_out: _ParquetParts, echo: Callable[[str], None]) -> dict[str, Any]:
    """Build sessions and samples block by block, write them, and return the session/sample counts."""
    report: dict[str, Any] = {"built": 0, "kept": 0, "removed_by_rule": {}, "removed_in_order": {}}
    per_split = {s: {"built": 0, "kept": 0} for s in (*SPLITS, "none")}
    counts = {s: 0 for s in SPLITS} | {f"{s}_with_positive": 0 for s in SPLITS}
    counts |= {"before_filter": 0, "train_high_quality": 0}
    next_sample = 0
    split_order = pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}, return_dtype=pl.Int8)
    for k, (log, positives) in enumerate(blocks):
        sessions, rep = quality(build_sessions(log, cfg, lacking), cfg, lacking)
        sessions = sessions.with_columns(split_expr(cuts).alias("split"))
        for key in ("built", "kept"):
            report[key] += rep[key]
        for key in ("removed_by_rule", "removed_in_order"):
            for rule, n in rep[key].items():
                report[key][rule] = report[key].get(rule, 0) + n
        report["skipped_rules"] = rep["skipped_rules"]
        for row in sessions.group_by("split").agg(pl.len(), pl.col("high_quality").sum()).iter_rows():
            per_split[row[0]]["built"] += row[1]
            per_split[row[0]]["kept"] += row[2]
        if cfg.split == "leave_one_out":
            samples = leave_one_out_samples(positives, cfg)
        elif mode == "positives":
            samples = window_samples(positives, cfg, cuts)
        else:
            samples = session_samples(sessions, positives, cfg)
        counts["before_filter"] += samples.height
        samples = samples.filter(pl.col("history").list.len() >= cfg.min_history,
                                 pl.col("target").list.len() > 0)
        samples = samples.sort("user", "ts_ms", split_order, maintain_order=True)
        samples = samples.with_columns(
            pl.int_range(next_sample, next_sample + samples.height, dtype=pl.Int64).alias("sample"))
        next_sample += samples.height
        for row in samples.group_by("split").agg(
            pl.len(), pl.col("high_quality").sum(), pl.col("target_positive").list.any().sum()
        ).iter_rows():
            counts[row[0]] += row[1]
            counts[f"{row[0]}_with_positive"] += row[3]
            if row[0] == "train":
                counts["train_high_quality"] += row[2]
        ses_out.write(sessions.select(SESSION_COLUMNS))
        smp_out.write(samples.select(SAMPLE_COLUMNS))
        if blocks.bounds.height > 1:
            echo(f"block {k + 1}/{blocks.bounds.height}: {sessions.height:,} sessions, {samples.height:,} samples")
    samples_summary = {**{s: counts[s] for s in SPLITS}, "total": next_sample,
                       "before_filter": counts["before_filter"],
                       "dropped_by_min_history": counts["before_filter"] - next_sample,
                       "train_high_quality": counts["train_high_quality"],
                       "with_positive_target": {s: counts[f"{s}_with_positive"] for s in SPLITS}}
    per_split = {s: v for s, v in per_split.items() if v["built"]}
    return {"sessions": {**report, "per_split": per_split}, "samples": samples_summary}
