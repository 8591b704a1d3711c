"""Positive labels and histories: the rules of ONEREC.md §1, checked against a brute-force reference."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from onerec.data import DataConfig
from onerec.data.history import attach_history, positive_expr


def _log(**cols: list) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    base = {name: [None] * n for name in ("long_view", "watch_ms", "duration_ms", "like", "follow", "comment",
                                            "share", "rating")}
    base.update(cols)
    return pl.DataFrame(base, schema={"long_view": pl.Int8, "watch_ms": pl.Int64, "duration_ms": pl.Int64,
                                      "like": pl.Int8, "follow": pl.Int8, "comment": pl.Int8, "share": pl.Int8,
                                      "rating": pl.Float32})


def test_positive_rules() -> None:
    """Each watch rule and the explicit signals decide `positive` as configured; nulls never count."""
    log = _log(long_view=[1, 0, 0, 0, None], watch_ms=[0, 9_000, 20_000, 1_000, 50_000],
               duration_ms=[10_000, 10_000, 30_000, None, 40_000], like=[0, 0, 0, 1, None])
    got = {rule: log.select(positive_expr(DataConfig(positive_watch=rule, watch_ratio=0.9, watch_seconds=15)))
           .to_series().to_list() for rule in ("long_view", "ratio", "seconds", "none")}
    assert got["long_view"] == [True, False, False, True, False], got
    assert got["ratio"] == [False, True, False, True, True], got
    assert got["seconds"] == [False, False, True, True, True], got
    assert got["none"] == [False, False, False, True, False], got


def test_rating_threshold() -> None:
    """With rating data, rating >= rating_threshold is positive."""
    log = _log(rating=[5.0, 4.0, 3.0, None])
    got = log.select(positive_expr(DataConfig(positive_watch="none", rating_threshold=4))).to_series().to_list()
    assert got == [True, True, False, False], got


events = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30)), min_size=0, max_size=40)
queries = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 32)), min_size=1, max_size=15)


@settings(max_examples=60, deadline=None)
@given(events=events, queries=queries, max_history=st.integers(1, 6))
def test_history_matches_brute_force(events: list, queries: list, max_history: int) -> None:
    """History = the user's positives with ts strictly before the query, oldest first, the last max_history."""
    pos = pl.DataFrame({"user": [u for u, _ in events], "ts_ms": [t for _, t in events]},
                       schema={"user": pl.Int32, "ts_ms": pl.Int64})
    pos = pos.with_row_index("item").with_columns(pl.col("item").cast(pl.Int32))
    pos = pos.sort(["user", "ts_ms"], maintain_order=True).select("user", "item", "ts_ms")
    q = pl.DataFrame({"user": [u for u, _ in queries], "ts_ms": [t for _, t in queries]},
                     schema={"user": pl.Int32, "ts_ms": pl.Int64})
    got = attach_history(q, pos, max_history)
    rows = pos.rows()
    for (user, ts), hist, hts in zip(queries, got["history"].to_list(), got["history_ts"].to_list()):
        want = [(i, t) for u, i, t in rows if u == user and t < ts][-max_history:]
        assert hist == [i for i, _ in want], f"user {user} ts {ts}: {hist} != {want}"
        assert hts == [t for _, t in want], f"user {user} ts {ts}: times {hts}"
