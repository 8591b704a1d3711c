"""prepare: contract tables, id round trip, no leakage, quirk counts, and one clear error per bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from onerec.data import DataConfig, load
from onerec.data.prepare import prepare
from onerec.io import OnerecError

LOG = "log_standard_4_25_to_5_08_fixture.csv"


def test_tables_follow_the_contract(kr_folder: Path, tmp_path: Path) -> None:
    """Every table of docs/ARCHITECTURE.md §1 is written with its columns and dtypes."""
    prepare(DataConfig(), kr_folder, tmp_path / "d")
    b = load(tmp_path / "d")
    assert b.interactions.schema["user"] == pl.Int32 and b.interactions.schema["item"] == pl.Int32
    assert b.interactions.columns[:5] == ["user", "item", "ts_ms", "request_id", "session"], b.interactions.columns
    assert b.interactions["rating"].null_count() == b.interactions.height, "KuaiRand has no rating: null"
    assert b.samples.schema["history"] == pl.List(pl.Int32), b.samples.schema
    assert b.sessions.schema["items"] == pl.List(pl.Int32), b.sessions.schema
    keys = b.interactions.select("user", "ts_ms")
    assert keys.equals(keys.sort("user", "ts_ms")), "interactions must be sorted by (user, ts_ms)"
    assert set(b.interactions["item"].unique()) <= set(b.items["item"]), "every log item is in items"
    assert (tmp_path / "d" / "data_config.json").is_file(), "resolved config is written"


def test_id_maps_round_trip(kr_folder: Path, tmp_path: Path) -> None:
    """Translating ids back through users/items.parquet gives exactly the source's (user, video, time) rows."""
    prepare(DataConfig(), kr_folder, tmp_path / "d")
    b = load(tmp_path / "d")
    back = b.interactions.join(b.users.select("user", "user_orig"), on="user").join(
        b.items.select("item", "item_orig"), on="item")
    got = back.select(pl.col("user_orig").cast(pl.Int64), pl.col("item_orig").cast(pl.Int64), "ts_ms").sort(pl.all())
    src = pl.read_csv(kr_folder / LOG).select(
        pl.col("user_id").alias("user_orig"), pl.col("video_id").alias("item_orig"), pl.col("time_ms").alias("ts_ms")
    ).unique().sort(pl.all())
    assert got.equals(src), "round trip through the id maps changed the log"
    assert b.users["user"].to_list() == list(range(b.users.height)), "user ids are contiguous"


def test_simulator_layout_with_request_ids(tmp_path: Path) -> None:
    """Files named *_sim.csv with an extra request_id column are read unchanged; sessions follow requests."""
    from onerec.data.fixture import write_kuairand_fixture

    folder = write_kuairand_fixture(tmp_path / "world", requests=True, suffix="sim", request_size=6)
    summary = prepare(DataConfig(), folder, tmp_path / "d")
    b = load(tmp_path / "d")
    assert summary["session_mode"] == "request", summary["session_mode"]
    assert (b.sessions["items"].list.len() == 6).all(), "one session = one request of 6 videos"
    assert b.interactions["request_id"].min() >= 0, "request ids are kept"


def test_real_kuairand(real_kuairand: tuple[Path, dict]) -> None:
    """The real log: 228,329 impressions read, the documented quirks counted (SOURCE.md: 5,460 exact
    duplicates, then 425 repeated keys, 3,568 zero durations)."""
    _, s = real_kuairand
    q = s["quirks"]
    assert q["rows_read"] == 228_329, q
    assert q["exact_duplicate_rows"] == 5_460, q
    assert q["repeated_keys"] == 425, q
    assert q["zero_duration_rows"] == 3_568, q
    assert s["interactions"] == 228_329 - 5_460 - 425, s["interactions"]


def test_real_kuairand_history_is_strictly_before_session(real_kuairand: tuple[Path, dict]) -> None:
    """No history item of any sample is at or after its session's first timestamp."""
    b = load(real_kuairand[0])
    late = b.samples.filter(pl.col("history_ts").list.max() >= pl.col("ts_ms")).height
    assert late == 0, f"{late} samples have history at/after the session start"
    joined = b.samples.join(b.sessions.select("session", pl.col("ts_ms").alias("start")), on="session")
    assert (joined["ts_ms"] == joined["start"]).all(), "sample ts_ms is the session's first impression"
    assert b.samples.filter(pl.col("history").list.len() > 0).height > 0.9 * b.samples.height, \
        "prior history should give almost every sample a history"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_log(folder: Path, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    path = folder / LOG
    fn(pl.read_csv(path)).write_csv(path)


BAD = {
    "missing file": (lambda f: (f / "user_features_fixture.csv").unlink(), {}, "user_features_"),
    "missing column": (lambda f: _edit_log(f, lambda d: d.drop("play_time_ms")), {}, "'play_time_ms'"),
    "wrong type": (lambda f: _edit_log(f, lambda d: d.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("yes")).otherwise(pl.col("is_click").cast(pl.String))
        .alias("is_click"))), {}, "'is_click' has 3 rows"),
    "NaN watch time": (lambda f: _edit_log(f, lambda d: d.with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(float("nan")).otherwise(pl.col("play_time_ms").cast(pl.Float64))
        .alias("play_time_ms"))), {}, "'play_time_ms' has 2 NaN rows"),
    "negative watch time": (lambda f: _edit_log(f, lambda d: d.with_columns(
        pl.when(pl.int_range(pl.len()) < 4).then(-5).otherwise(pl.col("play_time_ms")).alias("play_time_ms"))),
        {}, "watch_ms has 4 negative rows"),
    "duplicate rows": (lambda f: _edit_log(f, lambda d: pl.concat([d, d.head(7)])),
                       {"exact_duplicates": "error"}, "7 rows are exact duplicates"),
    "id absent from side table": (lambda f: (f / "video_features_basic_fixture.csv").write_text(
        "\n".join((f / "video_features_basic_fixture.csv").read_text().splitlines()[:-1]) + "\n"),
        {}, "1 item ids ("),
    "nothing left": (lambda f: None, {"min_history": 100_000}, "no samples left"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_error(case: str, kr_folder: Path, tmp_path: Path) -> None:
    """Each bad input raises OnerecError naming file/column/count, and leaves no output directory."""
    mutate, overrides, fragment = BAD[case]
    folder = _copy(kr_folder, tmp_path / "in")
    mutate(folder)
    out = tmp_path / "out"
    with pytest.raises(OnerecError) as err:
        prepare(DataConfig(**overrides), folder, out)
    message = str(err.value)
    assert fragment in message and "\n" not in message, f"{case}: {message!r}"
    assert not out.exists() and not list(tmp_path.glob(".out*")), f"{case}: partial output left behind"


@pytest.mark.parametrize("split", ["temporal", "leave_one_out"])
def test_blocks_do_not_change_the_result(kr_folder: Path, tmp_path: Path, split: str) -> None:
    """Building sessions and samples in many small user blocks gives the same tables as one block."""
    one = prepare(DataConfig(split=split), kr_folder, tmp_path / "one")
    many = prepare(DataConfig(split=split, block_rows=300), kr_folder, tmp_path / "many")
    assert one["samples"] == many["samples"] and one["sessions"] == many["sessions"], (one, many)
    for name in ("sessions", "samples"):
        a = pl.read_parquet(tmp_path / "one" / f"{name}.parquet")
        b = pl.read_parquet(tmp_path / "many" / f"{name}.parquet")
        assert a.equals(b), f"{name} differ between 1 block and many"


def test_load_names_a_missing_table(kr_folder: Path, tmp_path: Path) -> None:
    """load() of an incomplete data directory is an OnerecError naming the missing file."""
    prepare(DataConfig(), kr_folder, tmp_path / "d")
    (tmp_path / "d" / "samples.parquet").unlink()
    with pytest.raises(OnerecError, match="samples.parquet"):
        load(tmp_path / "d")


def test_random_exposure_sessions_kept_apart(tmp_path: Path) -> None:
    """A random log with request ids becomes sessions_random.parquet only: sessions and samples equal those without it."""
    from onerec.simulate.writer import generate
    from tests.simulate.conftest import tiny_config

    world = tmp_path / "world"
    generate(tiny_config(random_share=0.2), world)
    with_rnd = prepare(DataConfig(prior_history=False), world, tmp_path / "with")
    for path in world.glob("log_random_*"):
        path.unlink()
    without = prepare(DataConfig(prior_history=False), world, tmp_path / "without")
    for name, items in (("sessions.parquet", "items"), ("samples.parquet", "target")):
        a, b = (_orig_items(tmp_path / d, name, items) for d in ("with", "without"))
        assert a.equals(b), f"{name} changed by the random log (ids compared as original ids)"
    rnd = pl.read_parquet(tmp_path / "with" / "sessions_random.parquet")
    inter = pl.read_parquet(tmp_path / "with" / "interactions_random.parquet")
    assert rnd.columns == pl.read_parquet(tmp_path / "with" / "sessions.parquet").columns, rnd.columns
    assert rnd.height == inter["request_id"].n_unique() == with_rnd["sessions_random"]["built"] > 0, rnd.height
    assert rnd["session"].min() == without["sessions"]["built"], "random session ids must follow the logged ones"
    assert set(inter["session"].unique()) == set(rnd["session"]), "interactions_random.session must point into it"
    assert not (tmp_path / "without" / "sessions_random.parquet").exists(), "sessions_random without a random log"


def _orig_items(data: Path, name: str, items: str) -> pl.DataFrame:
    """Rows of ``name`` with item lists as original ids (the random log may add items, so ids shift)."""
    orig = pl.read_parquet(data / "items.parquet").select("item", "item_orig")
    frame = pl.read_parquet(data / name).with_row_index("_r")
    exploded = frame.select("_r", items).explode(items).join(orig, left_on=items, right_on="item", how="left",
                                                             maintain_order="left")
    lists = exploded.group_by("_r", maintain_order=True).agg(pl.col("item_orig"))
    return frame.drop(items, "user", *(["history"] if "history" in frame.columns else [])).join(lists, on="_r")
