"""Generic adapter: any CSV (plain or .gz) or Parquet log whose columns are mapped in config.

Design choices
- ``input`` is a folder (files matching ``csv_interactions``, concatenated in name order) or one file.
- ``csv_columns`` maps canonical names to the file's columns: ``user``, ``item``, ``ts_ms`` are required;
  ``request_id`` and any signal (``click``, ``watch_ms``, ``duration_ms``, ``long_view``, ``like``,
  ``follow``, ``comment``, ``share``, ``rating``) are optional. Unmapped canonical names that exist as
  columns with the same name are picked up too. ``csv_ts_unit = "s"`` multiplies timestamps by 1000.
- ``csv_items`` / ``csv_users``: optional side tables (file names or globs in the folder) holding the
  same id column as the log (``csv_columns.item`` / ``.user``); their other columns become features.
- ``csv_implicit = true``: every row is a positive (a consumption log without signals).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from onerec.data.adapters.common import (
    LOG_SCHEMA,
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


def _side(folder: Path, pattern: str, key: str, name: str) -> tuple[pl.DataFrame | None, str | None]:
    if not pattern:
        return None, None
    paths = [Path(pattern)] if Path(pattern).is_file() else find_files(folder, pattern, f"{name} table")
    frame = pl.concat([read_table(p) for p in paths], how="diagonal_relaxed")
    require_columns(frame, [key], paths[0])
    return frame.rename({key: f"{name}_orig"}), str(paths[0])


def read(cfg: DataConfig, folder: Path) -> RawData:
    """Read a mapped CSV/Parquet log."""
    folder = Path(folder)
    if folder.is_file():
        paths, folder = [folder], folder.parent
    else:
        paths = find_files(folder, cfg.csv_interactions, "interactions")
    mapping = {"user": "user", "item": "item", "ts_ms": "ts_ms", **cfg.csv_columns}
    frames = []
    for path in paths:
        df = scan_table(path)
        columns = column_names(df, path)
        full = dict(mapping)
        for name in ("request_id", *LOG_SCHEMA):
            if name not in full and name in columns:
                full[name] = name
        missing = [c for c in (full["user"], full["item"], full["ts_ms"]) if c not in columns]
        if missing:
            raise OnerecError(f"{path}: missing column {missing[0]!r} (map it with data.csv_columns)")
        log = canonical_log(df, full, path)
        if cfg.csv_ts_unit == "s":
            log = log.with_columns(pl.col("ts_ms") * 1000)
        if "request_id" not in full:
            log = log.with_columns(pl.lit(-1, pl.Int64).alias("request_id"))
        frames.append(log)
    log = concat_logs(frames)
    items, items_path = _side(folder, cfg.csv_items, mapping["item"], "item")
    users, users_path = _side(folder, cfg.csv_users, mapping["user"], "user")
    files = {"log": ",".join(map(str, paths))}
    files.update({k: v for k, v in (("items", items_path), ("users", users_path)) if v})
    return RawData(interactions=log, items=items, users=users, implicit=cfg.csv_implicit, files=files)
