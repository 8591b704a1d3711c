"""Rows of ``samples.parquet`` -> padded tensors the model reads.

Design choices
- The list columns are held as one flat int64 array plus offsets (``Ragged``), so gathering a batch is a
  few numpy slices, with no per-row Python objects and no worker processes.
- History keeps the most recent ``max_history`` items, oldest first, left-aligned, padded with ``-1`` on the
  right (``history (B, n)``); ``history_ts`` is aligned with it and padded with ``0``. The batch is only
  as wide as its longest row (``n <= max_history``).
- Sessions keep the first ``session_len`` target items in shown order, padded with ``-1`` (``sessions (B, m)``,
  ``m <= session_len`` the longest target in the batch: next-5 windows under a model built for m = 10 cost
  half the decoder compute).
- Which samples train the seed model follows docs/ARCHITECTURE.md §1: ``split == "train"`` and the session
  is high quality, or the sample is a next-m window (``session == -1``). Validation uses the same rule on
  ``split == "valid"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from onerec.io import OnerecError


@dataclass(frozen=True)
class Ragged:
    """Variable-length int rows as ``values`` (flat) and ``offsets`` (len rows + 1)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_series(cls, series: pl.Series) -> Ragged:
        lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = series.explode().drop_nulls().to_numpy().astype(np.int64)
        if len(values) != offsets[-1]:
            raise ValueError(f"column {series.name}: null entries inside lists")
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def pad_rows(
    rows: Ragged, index: np.ndarray, width: int, keep: str, fill: int
) -> torch.Tensor:
    """Rows ``index`` of ``rows`` as a (len(index), width) long tensor, left-aligned, padded with ``fill``.

    ``keep="last"`` keeps each row's last ``width`` values (recent history), ``"first"`` its first ones.
    """
    out = np.full((len(index), width), fill, dtype=np.int64)
    starts, ends = rows.offsets[index], rows.offsets[index + 1]
    for r, (s, e) in enumerate(zip(starts, ends)):
        if keep == "last":
            s = max(s, e - width)
        else:
            e = min(e, s + width)
        out[r, : e - s] = rows.values[s:e]
    return torch.from_numpy(out)


@dataclass(frozen=True)
class SampleTable:
    """The columns of ``samples.parquet`` that training reads, in numpy form."""

    history: Ragged
    history_ts: Ragged
    target: Ragged
    sample: np.ndarray  # (N,) sample ids

    @classmethod
    def from_frame(cls, samples: pl.DataFrame) -> SampleTable:
        return cls(
            history=Ragged.from_series(samples["history"]),
            history_ts=Ragged.from_series(samples["history_ts"]),
            target=Ragged.from_series(samples["target"]),
            sample=samples["sample"].to_numpy().astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.sample)

    def max_item(self) -> int:
        """Largest item id referenced (history or target); -1 when empty."""
        values = [a.values for a in (self.history, self.target) if len(a.values)]
        return int(max(v.max() for v in values)) if values else -1


def collate(
    table: SampleTable, index: np.ndarray, max_history: int, session_len: int
) -> dict[str, torch.Tensor]:
    """Padded batch for samples ``index``: ``history`` (B, n) / ``history_ts`` (B, n) / ``sessions`` (B, m).

    ``n`` = min(max_history, longest history in the batch) and ``m`` = min(session_len, longest target in
    the batch), each at least 1: no all-padding column is computed (the decoder is causal, so trailing padded
    items change no real token's output). Padding: -1 for item ids, 0 for timestamps. Targets longer than
    ``m`` are cut to their first ``m`` items.
    """
    index = np.asarray(index, dtype=np.int64)
    longest = int(table.history.lengths()[index].max(initial=0))
    n = max(1, min(max_history, longest))
    m = max(1, min(session_len, int(table.target.lengths()[index].max(initial=0))))
    return {
        "history": pad_rows(table.history, index, n, keep="last", fill=-1),  # (B, n)
        "history_ts": pad_rows(table.history_ts, index, n, keep="last", fill=0),  # (B, n)
        "sessions": pad_rows(table.target, index, m, keep="first", fill=-1),  # (B, m)
    }


def positive_targets(rows: pl.DataFrame) -> pl.DataFrame:
    """Targets cut to their positively engaged items (``target_positive``), order kept; the flags go too."""
    keep = pl.col("target_positive").list.eval(pl.element().arg_true())
    return rows.with_columns(pl.col("target").list.gather(keep)).drop("target_positive")


def item_wise(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per target item, the history unchanged: how an item-wise model (``max_session_items = 1``, the
    TIGER-style baseline) trains on session data, so every positive of a session is a target and not only its
    first (which ``collate`` would keep). Rows whose target is one item come back unchanged."""
    return rows.explode("target").drop_nulls("target").with_columns(pl.concat_list(pl.col("target")).alias("target"))


def seed_samples(samples: pl.DataFrame, sessions: pl.DataFrame | None, split: str,
                 rule: str = "high_quality") -> pl.DataFrame:
    """The samples of ``split`` that train/validate the seed model: ``rule = "high_quality"`` keeps
    high-quality sessions and windows (ONEREC.md), ``"all"`` every session (for logs where the paper's filter
    leaves too little, e.g. KuaiRand-Pure: 640 of 43,150 training sessions with a positive).

    Samples without any target item are dropped (nothing to predict).
    """
    if rule not in ("high_quality", "all"):
        raise OnerecError(f"seed-sample rule must be 'high_quality' or 'all', got {rule!r}")
    rows = samples.filter(pl.col("split") == split)
    if rule == "high_quality" and sessions is not None and "high_quality" in sessions.columns:
        good = sessions.filter(pl.col("high_quality"))["session"]
        rows = rows.filter((pl.col("session") == -1) | pl.col("session").is_in(good.implode()))
    return rows.filter(pl.col("target").list.len() > 0).sort("sample")


def history_sessions(rows: pl.DataFrame, chunk: int) -> pl.DataFrame:
    """Extra training rows from each user's *earliest* training history (``rows``: one split's samples with
    ``user``, ``ts_ms``, ``sample``, ``history``, ``history_ts``): its items cut into consecutive chunks of
    ``chunk`` items, oldest first, from the second item on; each chunk is a session target and the items before
    it its history. On KuaiRand the earliest history is the prior two weeks of positives, which the sequential
    baselines train on and the session samples only ever show as history. Sample ids continue after the
    largest in ``rows``; the rows come back with the columns ``sample, history, history_ts, target``."""
    if chunk < 1:
        raise OnerecError(f"history chunk must be >= 1, got {chunk}")
    first = rows.sort("ts_ms", "sample").group_by("user", maintain_order=True).first().sort("user")
    hist, hts, tgt = [], [], []
    for h, t in zip(first["history"].to_list(), first["history_ts"].to_list()):
        for j in range(1, len(h), chunk):
            hist.append(h[:j])
            hts.append(t[:j])
            tgt.append(h[j:j + chunk])
    start = int(rows["sample"].max() or 0) + 1 if len(rows) else 0
    return pl.DataFrame({
        "sample": np.arange(start, start + len(tgt), dtype=np.int64),
        "history": pl.Series(hist, dtype=rows.schema["history"]),
        "history_ts": pl.Series(hts, dtype=rows.schema["history_ts"]),
        "target": pl.Series(tgt, dtype=rows.schema["history"]),
    })
