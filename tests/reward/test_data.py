"""Reward-model inputs: label aggregation, thresholds, histories of sessions without samples, features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.io import OnerecError
from onerec.reward.data import SessionTable, encode_features, fit_thresholds, make_labels, read_sessions
from onerec.reward import RewardConfig
from tests.reward.conftest import make_reward_data, tiny_config

NAN = np.nan


def _table() -> SessionTable:
    items = np.array([[1, 2, 3, -1], [4, 5, -1, -1], [6, 7, 8, 9]])
    like = np.array([[1, 0, 0, NAN], [0, 0, NAN, NAN], [1, 1, 0, 0]], np.float32)
    unknown = np.full(items.shape, NAN, np.float32)  # a signal the source lacks
    watch = np.array([[10, 20, 30, NAN], [5, 5, NAN, NAN], [40, 0, 0, 0]], float) * 1000
    duration = np.array([[10, 40, 30, NAN], [10, 0, NAN, NAN], [40, 10, 10, 10]], float) * 1000
    return SessionTable(np.arange(3), np.zeros(3, np.int64), np.arange(3), np.array(["train"] * 3), items,
                        np.full((3, 2), -1), watch, duration, {"ltr": like, "shtr": unknown}, 0)


def test_session_labels_aggregate_item_labels() -> None:
    """Session label = the items' rate ("mean") or max ("any"); binary = above the training median; NaN if unknown."""
    table = _table()
    cfg = tiny_config(towers=["ltr", "shtr", "swt"], swt_mode="seconds", swt_seconds=45.0)
    thr = fit_thresholds(table, np.arange(3), ["ltr", "shtr", "swt"], cfg)
    assert thr["ltr"] == pytest.approx(1 / 3) and thr["swt"] == 45_000.0, thr
    labels = make_labels(table, ["ltr", "shtr", "swt"], cfg, thr)
    np.testing.assert_allclose(labels.session["ltr"], [1 / 3, 0.0, 0.5], err_msg="mean of item likes")
    np.testing.assert_array_equal(labels.binary["ltr"], [0, 0, 1], err_msg="rate above the median 1/3")
    assert np.isnan(labels.session["shtr"]).all(), "a missing signal must give NaN labels, not 0"
    np.testing.assert_array_equal(labels.session["swt"], [1, 0, 0], err_msg="total watch 60 s / 10 s / 40 s vs 45 s")
    np.testing.assert_allclose(labels.item["swt"][0, :3], [1.0, 0.5, 1.0], err_msg="item watch ratio")
    assert np.isnan(labels.item["swt"][1, 1]), "duration 0 gives an unknown watch ratio"
    anyl = make_labels(table, ["ltr"], tiny_config(towers=["ltr"], session_target="any"), thr)
    np.testing.assert_array_equal(anyl.session["ltr"], [1, 0, 1], err_msg="any liked item")


def test_swt_quantile_and_ratio_modes() -> None:
    """swt "quantile" cuts total watch at the training quantile; "ratio" is the soft Σwatch / Σduration."""
    table = _table()
    q = tiny_config(towers=["swt"], swt_mode="quantile", swt_quantile=0.5)
    thr = fit_thresholds(table, np.arange(3), ["swt"], q)
    assert thr["swt"] == 40_000.0, thr
    r = tiny_config(towers=["swt"], swt_mode="ratio")
    labels = make_labels(table, ["swt"], r, fit_thresholds(table, np.arange(3), ["swt"], r))
    np.testing.assert_allclose(labels.session["swt"], [60 / 80, 10 / 10, 40 / 70], rtol=1e-6)


def test_sessions_without_sample_take_the_latest_earlier_history(reward_data: Path, tmp_path: Path) -> None:
    """A session missing from samples.parquet gets the history of the user's latest earlier sample."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("sessions.parquet", "items.parquet", "users.parquet"):
        (data / name).write_bytes((reward_data / name).read_bytes())
    samples = pl.read_parquet(reward_data / "samples.parquet")
    sessions = pl.read_parquet(reward_data / "sessions.parquet")
    last = sessions.filter(pl.col("user") == 3).sort("ts_ms")["session"].to_list()
    samples.filter(pl.col("session") != last[-1]).write_parquet(data / "samples.parquet")
    table = read_sessions(data, tiny_config(max_history=50))
    assert table.n_without_sample == 1, table.n_without_sample
    prev = samples.filter(pl.col("session") == last[-2])["history"].to_list()[0]
    row = int(np.flatnonzero(table.session == last[-1])[0])
    got = table.history[row][table.history[row] >= 0].tolist()
    assert got == prev[-50:], f"expected the previous sample's history, got {got[:5]}..."


def test_features_categorical_numeric_and_lists() -> None:
    """Strings, *_id and few-valued columns are hashed categories (lists as bags); others standardised numerics."""
    frame = pl.DataFrame({
        "item": [0, 1, 2], "item_orig": ["a", "b", "c"], "author_id": [7, 7, 9],
        "kind": ["x", None, "y"], "tags": [[1, 2], [], None], "duration": [1.0, 100.0, 1000.0],
    })
    cfg = tiny_config(max_categories=2)
    feats = encode_features(frame, "item", 4, cfg)
    assert feats.columns == ["author_id", "kind", "tags", "duration"], feats.columns
    assert feats.idx[0, 0] == feats.idx[1, 0] != feats.idx[2, 0], "same author, same bucket"
    assert feats.idx[1, 1] == -1 and (feats.idx[3] == -1).all(), "nulls and absent rows contribute nothing"
    assert (feats.idx[0, 2:4] >= 0).all() and (feats.idx[1, 2:] == -1).all(), "a list is a bag of its values"
    col = feats.numeric[:3, 0]
    assert abs(col.mean()) < 1e-6 and abs(col.std() - 1) < 1e-5, f"numeric not standardised: {col}"
    with pytest.raises(OnerecError, match="out of range"):
        encode_features(frame, "item", 2, cfg)


def test_random_sessions_option(tmp_path: Path) -> None:
    """random_sessions reads the training-split sessions of sessions_random.parquet on top of the logged ones; off, it reads none."""
    data = make_reward_data(tmp_path / "d")
    logged = pl.read_parquet(data / "sessions.parquet")
    extra = logged.with_columns(pl.col("session") + logged["session"].max() + 1)
    extra.write_parquet(data / "sessions_random.parquet")
    base = read_sessions(data, RewardConfig(random_sessions=False))
    both = read_sessions(data, RewardConfig())
    n_train = int((extra["split"] == "train").sum())
    assert base.n_random == 0 and len(base) == logged.height, (base.n_random, len(base))
    assert both.n_random == n_train and len(both) == logged.height + n_train, (both.n_random, len(both))
    is_random = np.isin(both.session, extra["session"].to_numpy())
    assert set(both.split[is_random]) == {"train"}, "only training-split random sessions may be read"
    assert (both.history[is_random] >= 0).any(), "random sessions must get the user's history"
