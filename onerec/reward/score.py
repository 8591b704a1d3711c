"""Scoring sessions stored in a Parquet file (``onerec reward score``): one candidate session per row.

Design choices
- Rows are scored in batches with S = 1; each batch pads ``history`` and ``items`` to its own longest row
  with -1 (the model masks padding). An empty ``items`` list, an unknown item or user id, or a missing
  column is an OnerecError naming the file and the count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from onerec.io import OnerecError, atomic_path
from onerec.reward.model import RewardModel


def _pad(lists: list, fill: int = -1) -> np.ndarray:
    width = max([len(x) for x in lists] + [1])
    out = np.full((len(lists), width), fill, dtype=np.int64)
    for r, values in enumerate(lists):
        out[r, : len(values)] = values
    return out


def score_frame(model: RewardModel, frame: pl.DataFrame, batch_size: int = 1024, where: str = "sessions") -> pl.DataFrame:
    """``frame`` plus one Float32 column per tower and ``reward``."""
    missing = [c for c in ("history", "items") if c not in frame.columns]
    if missing:
        raise OnerecError(f"{where}: missing column(s) {', '.join(missing)} (need history, items[, user])")
    if frame["items"].null_count() or (frame["items"].list.len() == 0).any():
        n = int(frame["items"].null_count() + (frame["items"].list.len() == 0).sum())
        raise OnerecError(f"{where}: {n} row(s) with an empty or null items list")
    history = frame["history"].fill_null([]).to_list()
    items = frame["items"].to_list()
    if any(v is None for row in items for v in row) or any(v is None for row in history for v in row):
        raise OnerecError(f"{where}: null item ids inside history/items lists")
    users = frame["user"].to_numpy() if "user" in frame.columns else None
    if users is not None and frame["user"].null_count():
        raise OnerecError(f"{where}: {frame['user'].null_count()} null user id(s)")
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, frame.height, batch_size):
        stop = min(start + batch_size, frame.height)
        h = torch.from_numpy(_pad(history[start:stop]))
        s = torch.from_numpy(_pad(items[start:stop]))[:, None, :]  # (B, 1, m)
        u = None if users is None else torch.from_numpy(users[start:stop].astype(np.int64))
        try:
            probs = model.score(h, s, u)
        except OnerecError as err:
            raise OnerecError(f"{where} rows {start}..{stop - 1}: {err}") from None
        for key, value in probs.items():
            out.setdefault(key, []).append(value[:, 0].numpy().astype(np.float32))
    return frame.with_columns([pl.Series(k, np.concatenate(v)) for k, v in out.items()])


def score_file(model: RewardModel, path: Path, out: Path, batch_size: int = 1024) -> int:
    """Score every row of the Parquet file ``path``; write ``out`` atomically; return the row count."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    frame = pl.read_parquet(path)
    if frame.height == 0:
        raise OnerecError(f"{path}: no rows to score")
    scored = score_frame(model, frame, batch_size, where=str(path))
    with atomic_path(Path(out)) as tmp:
        scored.write_parquet(tmp)
    return frame.height
