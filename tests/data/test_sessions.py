"""Sessions: request ids, time-gap windows with a length cap, and the high-quality rules on hand-made logs."""

from __future__ import annotations

import polars as pl

from onerec.data import DataConfig
from onerec.data.sessions import assign_sessions, build_sessions, quality, resolve_mode

MIN = 60_000


def _log(user: list[int], ts: list[int], **signals: list) -> pl.DataFrame:
    n = len(user)
    cols = {"user": user, "item": list(range(n)), "ts_ms": ts, "request_id": signals.pop("request_id", [-1] * n),
            "_row": list(range(n))}
    for name in ("click", "long_view", "like", "follow", "comment", "share"):
        cols[name] = signals.get(name, [0] * n)
    cols["watch_ms"] = signals.get("watch_ms", [0] * n)
    cols["duration_ms"] = [10_000] * n
    cols["positive"] = signals.get("positive", [True] * n)
    return pl.DataFrame(cols, schema_overrides={"user": pl.Int32, "item": pl.Int32, "click": pl.Int8,
                                                "long_view": pl.Int8, "like": pl.Int8, "follow": pl.Int8,
                                                "comment": pl.Int8, "share": pl.Int8})


def test_gap_windows_split_on_gap_user_and_length() -> None:
    """A new session starts at a new user, after a gap > session_gap_s, and every session_max_items items."""
    ts = [0, 1, 2, 3, 40, 41, 0, 100]
    log = _log([0, 0, 0, 0, 0, 0, 1, 1], [t * MIN for t in ts])
    got = assign_sessions(log, DataConfig(session_gap_s=30 * 60, session_max_items=3), "gap")["session"].to_list()
    assert got == [0, 0, 0, 1, 2, 2, 3, 4], got


def test_request_sessions() -> None:
    """With request ids a session is one (user, request); rows without a request get session -1."""
    log = _log([0, 0, 0, 1, 1], [0, 1, 2, 0, 5], request_id=[7, 7, 8, 7, -1])
    cfg = DataConfig()
    assert resolve_mode(cfg, log, implicit=False) == "request", "auto mode must pick request ids"
    got = assign_sessions(log, cfg, "request")["session"].to_list()
    assert got == [0, 0, 1, 2, -1], got


def test_quality_rules_remove_exactly_what_they_should() -> None:
    """Session A passes; B lacks watched items, C lacks watch time, D lacks an explicit action, E fails all."""
    users, ts, click, watch, like = [], [], [], [], []
    spec = {  # user: (clicked items of 5, watch ms per item, like on first item)
        0: (5, 20_000, 1),  # A: passes
        1: (4, 20_000, 1),  # B: 4 watched < 5
        2: (5, 1_000, 1),   # C: 5 s total < 60 s
        3: (5, 20_000, 0),  # D: no explicit interaction
        4: (0, 0, 0),       # E: fails all three
    }
    for u, (n_click, w, lk) in spec.items():
        for k in range(5):
            users.append(u)
            ts.append(k * MIN)
            click.append(int(k < n_click))
            watch.append(w if k < n_click else 0)
            like.append(lk if k == 0 else 0)
    log = _log(users, ts, click=click, watch_ms=watch, like=like)
    cfg = DataConfig(hq_min_watched=5, hq_min_watch_s=60, hq_min_explicit=1, session_gap_s=3600)
    log = assign_sessions(log, cfg, "gap")
    sessions, report = quality(build_sessions(log, cfg, set()), cfg, set())
    assert sessions["high_quality"].to_list() == [True, False, False, False, False], sessions["high_quality"]
    assert report["removed_by_rule"] == {"min_watched": 2, "min_watch_time": 2, "min_explicit": 2}, report
    assert report["removed_in_order"] == {"min_watched": 2, "min_watch_time": 1, "min_explicit": 1}, report
    assert report["built"] - report["kept"] == sum(report["removed_in_order"].values()), report


def test_rule_without_signal_is_skipped() -> None:
    """A source without watch time skips the watch-time rule instead of removing every session."""
    log = _log([0] * 5, [k * MIN for k in range(5)], click=[1] * 5, like=[1] * 5)
    cfg = DataConfig(session_gap_s=3600)
    log = assign_sessions(log, cfg, "gap")
    sessions, report = quality(build_sessions(log, cfg, {"watch_ms"}), cfg, {"watch_ms"})
    assert report["skipped_rules"] == ["min_watch_time"], report
    assert sessions["high_quality"].to_list() == [True], report
    assert sessions["watch_ms"].to_list() == [None], "a lacking signal's label list must be null"
