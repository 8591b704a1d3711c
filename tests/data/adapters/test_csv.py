"""Generic CSV/Parquet adapter: mapped columns, seconds, side tables, and a missing mapped column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from onerec.data import DataConfig, load
from onerec.data.prepare import prepare
from onerec.io import OnerecError


def _write(folder: Path) -> Path:
    folder.mkdir()
    pl.DataFrame({
        "uid": ["a"] * 6 + ["b"] * 5, "sku": ["x", "y", "z", "x", "w", "y", "z", "z", "w", "x", "y"],
        "when": list(range(100, 106)) + list(range(200, 205)), "stars": [5, 4, 2, 5, 4, 5, 4, 4, 1, 5, 4],
    }).write_parquet(folder / "log.parquet")
    pl.DataFrame({"sku": ["w", "x", "y", "z"], "price": [1.0, 2.0, 3.0, 4.0]}).write_csv(folder / "items.csv")
    return folder


def test_mapped_parquet_log(tmp_path: Path) -> None:
    """Mapped columns are read, seconds become ms, ratings decide positives, item features are joined."""
    cfg = DataConfig(source="csv", csv_interactions="*.parquet", csv_items="items.csv", csv_ts_unit="s",
                     csv_columns={"user": "uid", "item": "sku", "ts_ms": "when", "rating": "stars"},
                     positive_watch="none", split="leave_one_out")
    summary = prepare(cfg, _write(tmp_path / "in"), tmp_path / "d")
    b = load(tmp_path / "d")
    assert b.interactions["ts_ms"].min() == 100_000, b.interactions["ts_ms"].min()
    assert summary["positives"] == 9, summary["positives"]
    assert b.items["item_orig"].to_list() == ["w", "x", "y", "z"] and b.items["price"].to_list() == [1, 2, 3, 4]
    assert summary["session_mode"] == "positives", "a rating log has no impression sessions"


def test_missing_mapped_column(tmp_path: Path) -> None:
    """A mapped column absent from the file is an error naming it."""
    cfg = DataConfig(source="csv", csv_interactions="*.parquet", csv_columns={"user": "uid", "item": "sku",
                                                                              "ts_ms": "time"})
    with pytest.raises(OnerecError, match="'time'"):
        prepare(cfg, _write(tmp_path / "in"), tmp_path / "d")
