"""Splits: leave-one-out (TIGER) never trains on a valid/test target; temporal labels follow the cut-offs."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from onerec.config import load_section
from onerec.data import DataConfig, load
from onerec.data.prepare import prepare
from onerec.data.splits import leave_one_out_samples, split_expr, window_samples

REPO = Path(__file__).resolve().parents[2]


def _positives(seqs: dict[int, list[int]], prior: dict[int, int] | None = None) -> pl.DataFrame:
    rows = []
    for user, items in seqs.items():
        n_prior = (prior or {}).get(user, 0)
        rows += [(user, item, pos, pos < n_prior) for pos, item in enumerate(items)]
    return pl.DataFrame(rows, schema={"user": pl.Int32, "item": pl.Int32, "ts_ms": pl.Int64, "prior": pl.Boolean},
                        orient="row")


def test_leave_one_out_on_one_sequence() -> None:
    """i1..i6: test (i1..i5 -> i6), valid (i1..i4 -> i5), train windows start at i2..i3 and stop before i5."""
    cfg = DataConfig(window_items=2, window_stride=1, max_history=3)
    got = leave_one_out_samples(_positives({0: [10, 11, 12, 13, 14, 15], 1: [1, 2]}), cfg)
    rows = {(r["split"], tuple(r["target"])): r["history"] for r in got.iter_rows(named=True)}
    assert rows == {
        ("train", (11, 12)): [10],
        ("train", (12, 13)): [10, 11],
        ("train", (13,)): [10, 11, 12],
        ("valid", (14,)): [11, 12, 13],
        ("test", (15,)): [12, 13, 14],
    }, rows


def test_prior_positives_are_history_only() -> None:
    """Prior-history positives are never targets, but they are in the history of the first targets."""
    cfg = DataConfig(window_items=1)
    got = leave_one_out_samples(_positives({0: [1, 2, 3, 4, 5, 6]}, prior={0: 2}), cfg)
    targets = sorted(t for ts in got["target"].to_list() for t in ts)
    assert targets == [3, 4, 5, 6], f"prior items 1, 2 must not be targets: {targets}"
    first = got.filter(pl.col("target").list.first() == 3)["history"].to_list()
    assert first == [[1, 2]], first


def test_temporal_labels() -> None:
    """Before valid_start train, before test_start valid, before test_end test, outside none."""
    cuts = {"train_start": 10, "valid_start": 20, "test_start": 30, "test_end": 40}
    got = pl.DataFrame({"ts_ms": [5, 10, 19, 20, 29, 30, 39, 40]}).select(split_expr(cuts)).to_series().to_list()
    assert got == ["none", "train", "train", "valid", "valid", "test", "test", "none"], got


def test_temporal_windows_stop_at_split_end() -> None:
    """A window's target never reaches into a later split."""
    cfg = DataConfig(window_items=3)
    cuts = {"train_start": None, "valid_start": 3, "test_start": 5, "test_end": None}
    got = window_samples(_positives({0: [0, 1, 2, 3, 4, 5, 6]}), cfg, cuts)
    by_split = {r["split"]: [] for r in got.iter_rows(named=True)}
    for r in got.iter_rows(named=True):
        by_split[r["split"]].append(r["target"])
    assert by_split["train"] == [[1, 2], [2]], by_split
    assert by_split["valid"] == [[3, 4], [4]], by_split
    assert by_split["test"] == [[5, 6], [6]], by_split


def test_amazon_toys_leave_one_out_gives_19412_test_users(datasets_dir: Path, tmp_path: Path) -> None:
    """Amazon Toys under the TIGER protocol: 19,412 test users, each with one one-item test target."""
    cfg = load_section(DataConfig, "data", REPO / "configs" / "amazon_toys.toml",
                       [f'data.input="{datasets_dir / "amazon_toys"}"'])
    prepare(cfg, Path(cfg.input), tmp_path / "toys")
    test = load(tmp_path / "toys").samples.filter(pl.col("split") == "test")
    assert test["user"].n_unique() == 19_412 == test.height, f"{test.height} test samples"
    assert (test["target"].list.len() == 1).all(), "leave-one-out targets are single items"
