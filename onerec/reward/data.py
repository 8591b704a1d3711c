"""Reward-model inputs: logged sessions as padded arrays, their labels, and item/user feature matrices.

Design choices
- Reads the data directory's files directly (docs/ARCHITECTURE.md §1): ``sessions.parquet`` (all sessions,
  every split, not only high quality), ``samples.parquet`` (the history of each session: the user's
  positives strictly before its first impression), ``items.parquet`` and ``users.parquet`` (features).
  A session without a sample gets the history of the user's latest earlier sample (positives are only
  ever appended) or an empty one; the count is reported.
- With ``random_sessions`` the training-split sessions of ``sessions_random.parquet`` (random exposure;
  ids after the logged ones, no sample: they take the user's latest earlier history) are appended.
- Sessions longer than ``max_session_len`` keep their first items (the shown order); labels come from
  the kept items only, so a label always describes exactly what the model sees. Padding is -1.
- Labels per tower, NaN where the source lacks the signal: item level (0/1 signal; swt: the watch ratio
  clip(watch / duration, 0, 1), NaN for unknown duration) and session level (``session_target`` "mean" =
  the session's rate, "any" = max; swt per ``swt_mode``). ``binary`` is the 0/1 session label AUC uses:
  the session's value above its training median (swt: above the configured cut), which for sparse
  signals (median 0) is "at least one item".
- Features are generic: every column other than the id and ``*_orig`` becomes either categorical (strings,
  booleans, ``*_id`` columns, numbers with few distinct values; hashed into ``feature_buckets`` per column;
  lists are bags of such values) or numeric (sign(x) log1p|x|, standardised). Nulls contribute nothing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from onerec.io import OnerecError
from onerec.reward import TOWER_SIGNAL, RewardConfig

MAX_LIST_FEATURES = 8  # elements kept from a list feature (tags ...)


@dataclass
class FeatureMatrix:
    """Features of ids 0..n-1: ``idx`` (n, K) int64 hashed category ids (-1 = none), ``numeric`` (n, F) float32."""

    idx: np.ndarray
    numeric: np.ndarray
    vocab: int
    columns: list[str]


@dataclass
class SessionTable:
    """Logged sessions as arrays; row r is one session."""

    session: np.ndarray  # (N,) int64
    user: np.ndarray  # (N,) int64
    ts_ms: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) str
    items: np.ndarray  # (N, m) int64, -1 padded
    history: np.ndarray  # (N, n) int64, -1 padded, oldest first
    watch_ms: np.ndarray  # (N, m) float64, NaN unknown/padding
    duration_ms: np.ndarray  # (N, m) float64
    signals: dict[str, np.ndarray]  # tower -> (N, m) float32 0/1, NaN unknown/padding (not swt)
    n_without_sample: int
    n_random: int = 0  # sessions read from sessions_random.parquet (training splits only)

    def __len__(self) -> int:
        return len(self.session)


@dataclass
class Labels:
    item: dict[str, np.ndarray]  # tower -> (N, m) float32, NaN = no label
    session: dict[str, np.ndarray]  # tower -> (N,) float32 soft target, NaN = no label
    binary: dict[str, np.ndarray]  # tower -> (N,) float32 0/1, NaN = no label


def _pad(lists: list, width: int, fill: float, dtype: type) -> np.ndarray:
    out = np.full((len(lists), width), fill, dtype=dtype)
    for r, values in enumerate(lists):
        if values is None:
            continue
        vals = [fill if v is None else v for v in values[:width]]
        out[r, : len(vals)] = vals
    return out


def _pad_tail(lists: list, width: int) -> np.ndarray:
    """Keep the last ``width`` entries of each list (the most recent history), left aligned, -1 padded."""
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for r, values in enumerate(lists):
        if values:
            tail = values[-width:]
            out[r, : len(tail)] = tail
    return out


def _read(path: Path, columns: list[str]) -> pl.DataFrame:
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    frame = pl.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise OnerecError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def read_sessions(data_dir: Path, config: RewardConfig) -> SessionTable:
    """All logged sessions of ``data_dir`` with their histories, truncated and padded per ``config``."""
    data_dir = Path(data_dir)
    signal_cols = sorted({TOWER_SIGNAL[t] for t in config.towers} | {"watch_ms", "duration_ms"})
    columns = ["session", "user", "ts_ms", "items", "split", *signal_cols]
    sessions = _read(data_dir / "sessions.parquet", columns)
    samples = _read(data_dir / "samples.parquet", ["session", "user", "history", "ts_ms"])
    if sessions.height == 0:
        raise OnerecError(f"{data_dir / 'sessions.parquet'}: no sessions")
    n_random = 0
    if config.random_sessions and (data_dir / "sessions_random.parquet").is_file():
        extra = _read(data_dir / "sessions_random.parquet", columns).select(columns)
        extra = extra.filter(pl.col("split").is_in(config.train_splits))
        n_random = extra.height
        sessions = pl.concat([sessions.select(columns), extra], how="vertical_relaxed")
    sessions = sessions.sort("session")
    hist = (
        samples.filter(pl.col("session") >= 0)
        .sort("ts_ms")
        .unique(subset="session", keep="first", maintain_order=True)
        .select("session", pl.col("history").alias("_history"))
    )
    sessions = sessions.join(hist, on="session", how="left")
    n_without = int(sessions["_history"].is_null().sum())
    histories = sessions["_history"].to_list()
    if n_without:
        histories = _fill_histories(sessions, samples, histories)
    m = config.max_session_len
    items = _pad(sessions["items"].to_list(), m, -1, np.int64)
    valid = items >= 0
    signals = {}
    for tower in config.towers:
        if tower == "swt":
            continue
        col = sessions[TOWER_SIGNAL[tower]]
        arr = _pad(col.to_list(), m, np.nan, np.float32) if col.dtype != pl.Null else np.full(items.shape, np.nan, np.float32)
        arr[~valid] = np.nan
        signals[tower] = arr
    watch = _pad(sessions["watch_ms"].to_list(), m, np.nan, np.float64)
    duration = _pad(sessions["duration_ms"].to_list(), m, np.nan, np.float64)
    watch[~valid] = np.nan
    duration[~valid] = np.nan
    return SessionTable(
        session=sessions["session"].to_numpy().astype(np.int64),
        user=sessions["user"].to_numpy().astype(np.int64),
        ts_ms=sessions["ts_ms"].to_numpy().astype(np.int64),
        split=sessions["split"].to_numpy().astype(str),
        items=items,
        history=_pad_tail(histories, config.max_history),
        watch_ms=watch,
        duration_ms=duration,
        signals=signals,
        n_without_sample=n_without,
        n_random=n_random,
    )


def _fill_histories(sessions: pl.DataFrame, samples: pl.DataFrame, histories: list) -> list:
    """History of sessions without a sample: the user's latest sample strictly before it (else empty)."""
    by_user: dict[int, tuple[np.ndarray, list]] = {}
    frame = samples.sort("user", "ts_ms").select("user", "ts_ms", "history")
    for (user,), group in frame.group_by("user", maintain_order=True):
        by_user[int(user)] = (group["ts_ms"].to_numpy(), group["history"].to_list())
    users = sessions["user"].to_list()
    stamps = sessions["ts_ms"].to_list()
    out = list(histories)
    for r, h in enumerate(histories):
        if h is not None:
            continue
        entry = by_user.get(users[r])
        if entry is None:
            out[r] = []
            continue
        pos = int(np.searchsorted(entry[0], stamps[r], side="left")) - 1
        out[r] = entry[1][pos] if pos >= 0 else []
    return out


def session_values(table: SessionTable, tower: str, config: RewardConfig) -> np.ndarray:
    """(N,) the session quantity a tower's labels are cut from, NaN when unknown.

    swt: total watch ms of the kept items ("quantile"/"seconds") or the watch ratio sum(watch)/sum(duration)
    ("ratio"); other towers: the session's rate of the signal (mean over its items).
    """
    if tower == "swt":
        known = ~np.isnan(table.watch_ms).all(axis=1)
        total = np.where(known, np.nansum(table.watch_ms, axis=1), np.nan)
        if config.swt_mode != "ratio":
            return total
        dur = np.nansum(np.where(np.isnan(table.watch_ms), np.nan, table.duration_ms), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(dur > 0, np.clip(total / dur, 0.0, 1.0), np.nan)
    sig = table.signals[tower]  # (N, m)
    known = ~np.isnan(sig).all(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(known, np.nanmean(np.where(known[:, None], sig, 0), axis=1), np.nan)


def fit_thresholds(table: SessionTable, rows: np.ndarray, towers: list[str], config: RewardConfig) -> dict[str, float]:
    """Per tower, the cut of the binary session label, fitted on ``rows`` (the training sessions).

    swt: "seconds" -> swt_seconds; "quantile" -> the swt_quantile of training totals; "ratio" -> the median
    ratio. Other towers: the median training rate (0 for sparse signals, so the label is "any item").
    """
    out = {}
    for tower in towers:
        if tower == "swt" and config.swt_mode == "seconds":
            out[tower] = config.swt_seconds * 1000.0
            continue
        values = session_values(table, tower, config)[rows]
        values = values[~np.isnan(values)]
        q = config.swt_quantile if tower == "swt" and config.swt_mode == "quantile" else 0.5
        out[tower] = float(np.quantile(values, q)) if len(values) else float("nan")
    return out


def make_labels(table: SessionTable, towers: list[str], config: RewardConfig, thresholds: dict[str, float]) -> Labels:
    """Item-, session-level (soft BCE target) and binary session labels per tower, NaN where unknown."""
    item, session, binary = {}, {}, {}
    for tower in towers:
        value = session_values(table, tower, config)
        with np.errstate(invalid="ignore"):
            hard = np.where(np.isnan(value), np.nan, (value > thresholds[tower]).astype(np.float64))
        binary[tower] = hard.astype(np.float32)
        if tower == "swt":
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(table.duration_ms > 0, np.clip(table.watch_ms / table.duration_ms, 0, 1), np.nan)
            item[tower] = ratio.astype(np.float32)
            session[tower] = (value if config.swt_mode == "ratio" else hard).astype(np.float32)
            continue
        item[tower] = table.signals[tower]
        if config.session_target == "mean":
            session[tower] = value.astype(np.float32)
        else:
            session[tower] = np.where(np.isnan(value), np.nan, value > 0).astype(np.float32)
    return Labels(item=item, session=session, binary=binary)


def _hash(value: object, buckets: int) -> int:
    if isinstance(value, (int, np.integer)):
        return int((int(value) * 2654435761) % (2**32)) % buckets
    return zlib.crc32(str(value).encode()) % buckets


def encode_features(frame: pl.DataFrame | None, id_col: str, n: int, config: RewardConfig) -> FeatureMatrix:
    """Hashed categorical ids and standardised numerics for ids ``0..n-1`` of ``frame`` (rows may be missing)."""
    if frame is None or frame.height == 0:
        return FeatureMatrix(np.full((n, 1), -1, np.int64), np.zeros((n, 0), np.float32), 1, [])
    ids = frame[id_col].to_numpy().astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise OnerecError(f"{id_col} ids out of range 0..{n - 1} in the feature table ({int((ids >= n).sum())} rows)")
    cat_cols, num_cols = [], []
    idx_parts, num_parts = [], []
    B = config.feature_buckets
    for name in frame.columns:
        if name == id_col or name.endswith("_orig"):
            continue
        col = frame[name]
        dtype = col.dtype
        is_list = isinstance(dtype, pl.List)
        is_num = dtype.is_numeric() and not is_list
        categorical = (not is_num) or name.endswith("_id") or col.n_unique() <= config.max_categories
        if isinstance(dtype, pl.Null) or col.null_count() == len(col):
            continue
        if categorical:
            offset = len(cat_cols) * B
            width = MAX_LIST_FEATURES if is_list else 1
            part = np.full((n, width), -1, np.int64)
            for row, value in zip(ids, col.to_list()):
                values = (value or [])[:width] if is_list else [value]
                hashed = [offset + _hash(v, B) for v in values if v is not None]
                part[row, : len(hashed)] = hashed
            idx_parts.append(part)
            cat_cols.append(name)
        else:
            x = col.cast(pl.Float64).to_numpy()
            x = np.sign(x) * np.log1p(np.abs(x))
            mean, std = np.nanmean(x), np.nanstd(x)
            z = np.zeros(n, np.float32)
            z[ids] = np.nan_to_num((x - mean) / (std if std > 0 else 1.0), nan=0.0)
            num_parts.append(z[:, None])
            num_cols.append(name)
    idx = np.concatenate(idx_parts, axis=1) if idx_parts else np.full((n, 1), -1, np.int64)
    numeric = np.concatenate(num_parts, axis=1) if num_parts else np.zeros((n, 0), np.float32)
    return FeatureMatrix(idx, numeric.astype(np.float32), max(1, len(cat_cols) * B), cat_cols + num_cols)


def read_catalog(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``items.parquet`` (required) and ``users.parquet`` (optional) of a data directory."""
    data_dir = Path(data_dir)
    items = _read(data_dir / "items.parquet", ["item"])
    users_path = data_dir / "users.parquet"
    users = _read(users_path, ["user"]) if users_path.is_file() else None
    return items, users
