"""Evaluation sets read from a data directory: LOO cross-checked against samples, sessions without leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.evaluate import datasets
from onerec.io import OnerecError

SCHEMA = {"sample": pl.Int64, "user": pl.Int32, "session": pl.Int64, "split": pl.String,
          "history": pl.List(pl.Int32), "target": pl.List(pl.Int32), "target_positive": pl.List(pl.Boolean),
          "ts_ms": pl.Int64}


def _write(path: Path, interactions: list[tuple[int, int, int, bool]], samples: list[dict], n_items: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    u, i, t, p = zip(*interactions)
    pl.DataFrame({"user": np.array(u, np.int32), "item": np.array(i, np.int32), "ts_ms": np.array(t, np.int64),
                  "positive": np.array(p)}).write_parquet(path / "interactions.parquet")
    pl.DataFrame({"item": np.arange(n_items, dtype=np.int32)}).write_parquet(path / "items.parquet")
    rows = [{"sample": k, "session": -1, "target_positive": [True] * len(s["target"]), "ts_ms": k} | s
            for k, s in enumerate(samples)]
    pl.DataFrame(rows, schema=SCHEMA).write_parquet(path / "samples.parquet")
    return path


def _loo_dir(path: Path, test_target_user0: int) -> Path:
    seqs = {0: [3, 1, 4, 1, 5], 1: [2, 7, 1, 8]}
    inter = [(u, item, t, True) for u, s in seqs.items() for t, item in enumerate(s)] + [(0, 9, 99, False)]
    samples = [
        {"user": 0, "split": "valid", "history": [3, 1, 4], "target": [1]},
        {"user": 0, "split": "test", "history": [3, 1, 4, 1], "target": [test_target_user0]},
        {"user": 1, "split": "valid", "history": [2, 7], "target": [1]},
        {"user": 1, "split": "test", "history": [2, 7, 1], "target": [8]},
    ]
    return _write(path, inter, samples, 10)


def test_loo_from_positive_sequences(tmp_path: Path) -> None:
    """Sequences are the users' positives in time order (the non-positive item 9 is left out), split per §1."""
    loo = datasets.loo_from_data(_loo_dir(tmp_path / "ok", 5), max_history=20)
    assert [s.tolist() for s in loo.train_sequences] == [[3, 1, 4], [2, 7]], f"train {loo.train_sequences}"
    assert loo.test.target.tolist() == [5, 8] and loo.valid.target.tolist() == [1, 1], "targets"


def test_loo_target_mismatch_is_an_error(tmp_path: Path) -> None:
    """A samples.parquet whose test target is not the sequence's last item is refused, naming the count."""
    with pytest.raises(OnerecError, match="1 test targets differ"):
        datasets.loo_from_data(_loo_dir(tmp_path / "bad", 6), max_history=20)


def test_next_session_sets_skip_empty_and_train_stops_at_cutoff(tmp_path: Path) -> None:
    """Only sessions with positives are evaluated; training sequences hold no valid/test positives."""
    samples = [
        {"user": 0, "split": "train", "history": [1], "target": [2, 3], "target_positive": [True, False]},
        {"user": 0, "split": "train", "history": [1, 2], "target": [4], "target_positive": [True]},
        {"user": 0, "split": "valid", "history": [1, 2, 4], "target": [5], "target_positive": [True]},
        {"user": 0, "split": "test", "history": [1, 2, 4, 5], "target": [6, 7], "target_positive": [False, True]},
        {"user": 1, "split": "test", "history": [8], "target": [9], "target_positive": [False]},
    ]
    rows = [{"session": k, "ts_ms": k, "sample": k} | s for k, s in enumerate(samples)]
    path = tmp_path / "sess"
    path.mkdir()
    pl.DataFrame(rows, schema=SCHEMA).write_parquet(path / "samples.parquet")
    pl.DataFrame({"item": np.arange(10, dtype=np.int32)}).write_parquet(path / "items.parquet")
    test = datasets.next_session_from_data(path, "test", max_history=3)
    assert [p.tolist() for p in test.positives] == [[7]], f"positives {test.positives}"
    assert test.history.tolist() == [[2, 4, 5]], f"history {test.history.tolist()}"
    train, n_items = datasets.session_train_sequences(path)
    assert [s.tolist() for s in train] == [[1, 2, 4]] and n_items == 10, f"train {train}"
