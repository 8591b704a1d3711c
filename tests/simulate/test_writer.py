"""Files in the KuaiRand layout: determinism, calibration band, structure, --from, the data adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.io import OnerecError
from onerec.simulate.writer import LOG_COLUMNS, generate, log_file_name
from tests.simulate.conftest import tiny_config

REAL_LOG_COLUMNS = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
                    "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
                    "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab"]


def test_same_seed_byte_identical(tiny_world_dir: Path, tmp_path: Path) -> None:
    """Generating the same config twice gives byte-identical files (summary timings aside)."""
    again = tmp_path / "again"
    generate(tiny_config(), again)
    names = sorted(p.name for p in tiny_world_dir.iterdir() if p.name != "simulate_summary.json")
    assert names == sorted(p.name for p in again.iterdir() if p.name != "simulate_summary.json"), names
    for name in names:
        assert (tiny_world_dir / name).read_bytes() == (again / name).read_bytes(), f"{name} differs"


def test_other_seed_differs(tiny_world_dir: Path, tmp_path: Path) -> None:
    """A different seed gives a different log."""
    other = tmp_path / "other"
    generate(tiny_config(seed=4), other)
    name = log_file_name(tiny_config())
    assert (tiny_world_dir / name).read_bytes() != (other / name).read_bytes(), "seed had no effect"


def test_log_layout(tiny_world_dir: Path) -> None:
    """The log has the official columns + request_id, is sorted by time, and follows the long-view rule."""
    log = pl.read_csv(tiny_world_dir / "log_standard_4_25_to_4_26_sim.csv")
    assert log.columns == REAL_LOG_COLUMNS + ["request_id"] and LOG_COLUMNS == log.columns, log.columns
    t = log["time_ms"].to_numpy()
    assert (np.diff(t) >= 0).all(), "log not sorted by time_ms"
    lv = log["play_time_ms"].to_numpy() >= np.minimum(18_000, log["duration_ms"].to_numpy())
    assert (lv == log["long_view"].to_numpy().astype(bool)).all(), "long_view != watch >= min(18 s, duration)"
    per_request = log.group_by("request_id").agg(pl.len().alias("n"), pl.col("video_id").n_unique().alias("u"),
                                                 pl.col("user_id").n_unique().alias("users"))
    n = per_request["n"].to_numpy()
    assert n.min() >= 5 and n.max() <= 10, f"request sizes {n.min()}..{n.max()}"
    assert (per_request["u"] == per_request["n"]).all(), "a request shows an item twice"
    assert (per_request["users"] == 1).all(), "a request spans users"
    assert set(log["date"].unique().to_list()) <= {20220425, 20220426, 20220427}, log["date"].unique().to_list()
    videos = pl.read_csv(tiny_world_dir / "video_features_basic_sim.csv")
    assert set(log["video_id"].to_list()) <= set(videos["video_id"].to_list()), "log video missing from features"


def test_rates_within_calibration_band(calibration_world_dir: Path) -> None:
    """Every logged rate is within 20 % of the real KuaiRand-Pure rate, and many requests are high quality."""
    summary = json.loads((calibration_world_dir / "simulate_summary.json").read_text())
    log = pl.read_csv(calibration_world_dir / summary["log_file"])
    real = {"is_click": 0.442, "long_view": 0.311, "is_like": 0.0171, "is_follow": 0.0013,
            "is_comment": 0.0025, "is_forward": 0.0009}
    for col, rate in real.items():
        got = float(log[col].mean())
        assert abs(got / rate - 1) <= 0.2, f"{col}: {got:.5f} vs real {rate} ({log.height} rows)"
    share = summary["high_quality"]["user_day_share"]
    assert share > 0.05, f"only {share:.1%} of user-days have a high-quality request (real Pure: ~1 %)"


def test_from_real_features(datasets_dir: Path, tmp_path: Path) -> None:
    """--from keeps real video ids, tags, authors and durations, and real user ids and activity degrees."""
    root = datasets_dir / "kuairand_pure"
    out = tmp_path / "real"
    generate(tiny_config(users=300, items=400, days=1, from_path=root), out)
    real_videos = pl.read_csv(root / "video_features_basic_pure.csv.gz", infer_schema_length=None)
    sim_videos = pl.read_csv(out / "video_features_basic_sim.csv", infer_schema_length=None)
    joined = sim_videos.join(real_videos, on="video_id", suffix="_real")
    assert joined.height == 400, f"{joined.height} of 400 videos are real ids"
    for col in ("author_id", "tag", "music_id"):
        same = (joined[col] == joined[f"{col}_real"]) | joined[f"{col}_real"].is_null()
        assert same.all(), f"{col} changed for {int((~same).sum())} videos"
    real_users = pl.read_csv(root / "user_features_pure.csv.gz", infer_schema_length=None)
    sim_users = pl.read_csv(out / "user_features_sim.csv", infer_schema_length=None)
    both = sim_users.join(real_users, on="user_id", suffix="_real")
    assert both.height == 300 and (both["user_active_degree"] == both["user_active_degree_real"]).all()


def test_from_bad_layout(tmp_path: Path) -> None:
    """--from a folder without the KuaiRand files is an error naming the missing file."""
    with pytest.raises(OnerecError, match="video_features_basic_pure"):
        generate(tiny_config(from_path=tmp_path), tmp_path / "out")


def test_kuairand_adapter_reads_world(tiny_world_dir: Path, tmp_path: Path) -> None:
    """`onerec data prepare --source kuairand` reads the world unchanged: every row, one session per request."""
    from onerec.data.config import DataConfig
    from onerec.data.prepare import prepare

    summary = json.loads((tiny_world_dir / "simulate_summary.json").read_text())
    data = prepare(DataConfig(source="kuairand", input=str(tiny_world_dir)), tiny_world_dir, tmp_path / "data")
    assert data["interactions"] == summary["rows"], f"{data['interactions']} rows read of {summary['rows']}"
    assert data["sessions"]["built"] == summary["requests"], (data["sessions"], summary["requests"])
    assert data["sessions"]["kept"] == summary["high_quality"]["requests"], (
        f"adapter kept {data['sessions']['kept']} high-quality sessions, simulator counted "
        f"{summary['high_quality']['requests']}")


def test_random_exposure_log(tiny_world_dir: Path, tmp_path: Path) -> None:
    """The random log has is_rand=1 and its own request ids; with random_share=0 it is absent and the standard log unchanged."""
    cfg = tiny_config()
    standard = pl.read_csv(tiny_world_dir / log_file_name(cfg))
    rnd = pl.read_csv(tiny_world_dir / log_file_name(cfg, "random"))
    summary = json.loads((tiny_world_dir / "simulate_summary.json").read_text())["random_exposure"]
    assert rnd.columns == LOG_COLUMNS and rnd.height == summary["rows"] > 0, (rnd.columns, rnd.height, summary)
    assert (rnd["is_rand"] == 1).all() and (standard["is_rand"] == 0).all(), "is_rand flags wrong"
    assert rnd["request_id"].n_unique() == summary["requests"], summary
    assert not set(rnd["request_id"].to_list()) & set(standard["request_id"].to_list()), "request ids shared"
    assert rnd["time_ms"].is_sorted(), "random log not sorted by time"
    share = summary["requests"] / standard["request_id"].n_unique()
    assert 0.0 < share < 3 * cfg.random_share, f"random requests are {share:.3f} of logged ones"
    off = tmp_path / "off"
    generate(tiny_config(random_share=0.0), off)
    assert not list(off.glob("log_random_*")), "random log written with random_share=0"
    assert (off / log_file_name(cfg)).read_bytes() == (tiny_world_dir / log_file_name(cfg)).read_bytes(), \
        "random_share changed the standard log"
