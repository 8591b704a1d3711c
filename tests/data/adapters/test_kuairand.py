"""KuaiRand adapter: prior history before the log, daily statistics averaged, random log kept apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl

from onerec.data import DataConfig, load
from onerec.data.adapters.kuairand import read
from onerec.data.prepare import prepare


def _with_prior(kr_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    shutil.copytree(kr_folder, folder)
    log = pl.read_csv(next(folder.glob("log_standard_*.csv")))
    u0, u1 = log["user_id"].min(), log["user_id"].max()
    rows = [
        {"user_id": int(u0), "last_time_ms": 10**13, "long_view_last50": [3, 4, 3], "like_last50": [4, 9]},
        {"user_id": int(u1), "last_time_ms": 1_000, "long_view_last50": [], "like_last50": [7]},
        {"user_id": 999_999, "last_time_ms": 1_000, "long_view_last50": [1], "like_last50": []},
    ]
    (folder / "user_recent_history_4_09_to_4_24.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_prior_history_is_before_the_log(kr_folder: Path, tmp_path: Path) -> None:
    """Prior positives = long views in order, then likes not among them, all strictly before the log start."""
    raw = read(DataConfig(), _with_prior(kr_folder, tmp_path))
    start = raw.interactions["ts_ms"].min()
    first = raw.prior.filter(pl.col("user_orig") == raw.interactions["user_orig"].min())
    assert first["item_orig"].to_list() == [3, 4, 3, 9], first
    assert first["ts_ms"].is_sorted() and first["ts_ms"].max() < start, "prior must precede the log, in order"
    assert (raw.prior["ts_ms"] < start).all(), "every prior positive precedes the log"


def test_prior_history_reaches_samples(kr_folder: Path, tmp_path: Path) -> None:
    """The first sample of a user with prior positives has them in its history; users absent from the log
    are dropped and counted."""
    summary = prepare(DataConfig(), _with_prior(kr_folder, tmp_path), tmp_path / "d")
    b = load(tmp_path / "d")
    u0 = b.users.filter(pl.col("user_orig") == str(b.users["user_orig"].cast(pl.Int64).min()))["user"][0]
    first = b.samples.filter(pl.col("user") == u0).sort("ts_ms")["history"][0].to_list()
    orig = dict(zip(b.items["item"].to_list(), b.items["item_orig"].to_list()))
    assert [orig[i] for i in first[:4]] == ["3", "4", "3", "9"], first
    assert summary["quirks"]["prior_rows_of_users_without_log"] == 1, summary["quirks"]
    assert summary["prior_positives"] == 5, summary["prior_positives"]


def test_daily_statistics_and_random_log(kr_folder: Path, tmp_path: Path) -> None:
    """A daily statistic table is averaged per video; log_random_* goes to interactions_random.parquet."""
    folder = tmp_path / "in"
    shutil.copytree(kr_folder, folder)
    (folder / "video_features_statistic_fixture.csv").write_text(
        "video_id,date,show_cnt\n0,20220425,10\n0,20220426,30\n1,20220425,5\n")
    log = pl.read_csv(next(folder.glob("log_standard_*.csv")))
    log.head(20).write_csv(folder / "log_random_4_22_to_5_08_fixture.csv")
    prepare(DataConfig(), folder, tmp_path / "d")
    b = load(tmp_path / "d")
    stats = b.items.filter(pl.col("item_orig").is_in(["0", "1"])).sort("item")
    assert stats["show_cnt"].to_list() == [20.0, 5.0] and stats["counts"].to_list() == [2, 1], stats
    assert b.interactions_random is not None and b.interactions_random.height == 20, "random log kept apart"
    assert b.interactions.height == log.height, "random rows do not enter the standard log"
