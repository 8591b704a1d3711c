"""Evaluation sets from a prepared data directory (docs/ARCHITECTURE.md §1), the same for every model.

Design choices
- Leave-one-out (EVAL.md §1): the per-user sequences are rebuilt from ``interactions.parquet`` (positives,
  sorted by user and time) and split by :func:`onerec.evaluate.protocols.leave_one_out`. The valid and test
  targets are then checked against ``samples.parquet`` user by user, so the baselines are scored on exactly
  the targets the model's data holds out; a mismatch is an error, not a warning.
- Next session (EVAL.md §2): samples of the requested split with ``|P| >= 1``, ``P = target[target_positive]``;
  the history is the sample's own (the user's positives strictly before the session), last ``max_history``.
- Training sequences for the sequential baselines on session data: per user, the history of the user's
  latest training sample followed by that session's positives, i.e. every positive before the
  validation cut-off (prior-history positives included), oldest first, capped at the data's
  ``max_history``. Nothing at or after the validation cut-off is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onerec.evaluate.protocols import LeaveOneOut, NextSessionSet, leave_one_out, pad_histories
from onerec.io import OnerecError


def loo_from_data(data_dir: Path, max_history: int = 20) -> LeaveOneOut:
    """EVAL.md §1 split of a leave-one-out data directory, cross-checked against its ``samples.parquet``."""
    import polars as pl

    data_dir = Path(data_dir)
    for name in ("interactions.parquet", "items.parquet", "samples.parquet"):
        if not (data_dir / name).is_file():
            raise OnerecError(f"{data_dir}: missing {name} (run `onerec data prepare`)")
    n_items = pl.scan_parquet(data_dir / "items.parquet").select(pl.len()).collect().item()
    pos = (
        pl.read_parquet(data_dir / "interactions.parquet", columns=["user", "item", "ts_ms", "positive"])
        .filter(pl.col("positive"))
        .sort(["user", "ts_ms"], maintain_order=True)
        .group_by("user", maintain_order=True)
        .agg(pl.col("item"))
        .filter(pl.col("item").list.len() >= 3)
    )
    users = pos["user"].to_numpy()
    seqs = [np.asarray(s, dtype=np.int64) for s in pos["item"].to_list()]
    loo = leave_one_out(seqs, n_items, max_history)
    samples = pl.read_parquet(data_dir / "samples.parquet", columns=["user", "split", "target"])
    for split, held in (("valid", loo.valid.target), ("test", loo.test.target)):
        theirs = samples.filter(pl.col("split") == split).select("user", pl.col("target").list.first())
        ours = pl.DataFrame({"user": users.astype(np.int32), "mine": held})
        joined = ours.join(theirs, on="user", how="full", coalesce=True)
        bad = joined.filter(pl.col("mine").is_null() | pl.col("target").is_null() | (pl.col("mine") != pl.col("target")))
        if bad.height:
            raise OnerecError(
                f"{data_dir / 'samples.parquet'}: {bad.height} {split} targets differ from the last items of the "
                f"users' positive sequences in interactions.parquet (first user {bad['user'][0]})"
            )
    return loo


def _positives(targets: list, flags: list) -> list[np.ndarray]:
    return [np.asarray([t for t, f in zip(ts, fs) if f], dtype=np.int64) for ts, fs in zip(targets, flags)]


def next_session_from_data(data_dir: Path, split: str, max_history: int = 50) -> NextSessionSet:
    """Samples of ``split`` with at least one positive: histories (last ``max_history``) and positive sets."""
    import polars as pl

    data_dir = Path(data_dir)
    file = data_dir / "samples.parquet"
    if not file.is_file():
        raise OnerecError(f"{data_dir}: missing samples.parquet (run `onerec data prepare`)")
    rows = pl.read_parquet(file, columns=["split", "history", "target", "target_positive"]).filter(
        pl.col("split") == split
    )
    if rows.height == 0:
        raise OnerecError(f"{file}: no samples with split == {split!r}")
    positives = _positives(rows["target"].to_list(), rows["target_positive"].to_list())
    keep = [i for i, p in enumerate(positives) if len(p)]
    histories = rows["history"].to_list()
    return NextSessionSet(
        history=pad_histories([np.asarray(histories[i], dtype=np.int64) for i in keep], max_history),
        positives=[positives[i] for i in keep],
    )


def session_train_sequences(data_dir: Path) -> tuple[list[np.ndarray], int]:
    """Per user, every positive before the validation cut-off (history of the latest train sample + its positives)."""
    import polars as pl

    data_dir = Path(data_dir)
    n_items = pl.scan_parquet(data_dir / "items.parquet").select(pl.len()).collect().item()
    rows = (
        pl.read_parquet(data_dir / "samples.parquet", columns=["user", "split", "ts_ms", "history", "target", "target_positive"])
        .filter(pl.col("split") == "train")
        .sort(["user", "ts_ms"])
        .group_by("user", maintain_order=True)
        .last()
    )
    positives = _positives(rows["target"].to_list(), rows["target_positive"].to_list())
    seqs = [np.concatenate([np.asarray(h, dtype=np.int64), p]) for h, p in zip(rows["history"].to_list(), positives)]
    return [s for s in seqs if len(s) >= 2], n_items
