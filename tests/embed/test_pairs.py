"""Training positives exclude every held-out target; co-engagement pairs respect the window."""

from __future__ import annotations

import numpy as np
import polars as pl

from onerec.embed.pairs import co_engagement_pairs, train_positives


def _log() -> pl.DataFrame:
    rows = [(u, (u * 7 + j) % 20, 1000 * j + 10 * u) for u in range(4) for j in range(6)]
    return pl.DataFrame(rows, schema={"user": pl.Int32, "item": pl.Int32, "ts_ms": pl.Int64}, orient="row").with_columns(
        positive=pl.lit(True), session=pl.lit(-1, pl.Int64)
    )


def _samples(rows: list[tuple[int, int, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user": pl.Int32, "session": pl.Int64, "split": pl.String, "ts_ms": pl.Int64},
                        orient="row")


def test_per_user_cutoff() -> None:
    """Leave-one-out: no training positive at or after the user's first valid/test target time."""
    log = _log()
    samples = _samples([(u, -1, s, 1000 * j + 10 * u) for u in range(4) for s, j in (("valid", 4), ("test", 5))])
    pos, counts = train_positives(log, samples)
    latest = pos.group_by("user").agg(pl.col("ts_ms").max()).sort("user")["ts_ms"].to_list()
    assert latest == [3000 + 10 * u for u in range(4)], f"held-out positives leaked: {latest}"
    assert counts["dropped_user_cutoff"] == 8, f"expected 2 dropped per user, got {counts}"


def test_global_cutoff_for_session_splits() -> None:
    """Temporal split: a user without held-out samples still loses positives after the first test session."""
    log = _log()
    samples = _samples([(0, 7, "test", 2500), (1, -1, "train", 100)])
    pos, _ = train_positives(log, samples)
    assert pos["ts_ms"].max() < 2500, f"positive at {pos['ts_ms'].max()} after the global cut-off 2500"
    assert pos.filter(pl.col("user") == 3).height == 3, "user 3 should keep only its 3 positives before 2500"


def test_held_out_sessions_excluded() -> None:
    """Positives inside a valid/test session of sessions.parquet are never training positives."""
    log = _log().with_columns(session=pl.when(pl.col("user") == 2).then(pl.lit(9, pl.Int64)).otherwise(-1))
    sessions = pl.DataFrame({"session": [9], "split": ["valid"]})
    pos, _ = train_positives(log, _samples([(0, -1, "train", 0)]), sessions)
    assert pos.filter(pl.col("user") == 2).height == 0, "positives of a held-out session were kept"


def test_pairs_match_brute_force() -> None:
    """Pairs are exactly (a, b): same user, b among the next `window_items` positives, gap <= window_ms, a != b."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pl.DataFrame({"user": np.sort(rng.integers(0, 15, n)).astype(np.int32),
                          "item": rng.integers(0, 12, n).astype(np.int32),
                          "ts_ms": rng.integers(0, 10_000, n)}).sort(["user", "ts_ms"])
    got = co_engagement_pairs(frame, window_items=3, window_ms=2500, max_pairs=10**6, seed=0)
    u, it, ts = (frame[c].to_list() for c in ("user", "item", "ts_ms"))
    want = [(it[i], it[j]) for i in range(n) for j in range(i + 1, min(i + 4, n))
            if u[i] == u[j] and ts[j] - ts[i] <= 2500 and it[i] != it[j]]
    assert sorted(map(tuple, got.tolist())) == sorted(want), f"{len(got)} pairs vs {len(want)} expected"
    capped = co_engagement_pairs(frame, window_items=3, window_ms=2500, max_pairs=10, seed=0)
    assert len(capped) == 10, f"max_pairs not applied: {len(capped)}"


def test_histories_of_train_samples_join_but_respect_cutoffs() -> None:
    """include_histories adds train-sample history positives the log lacks, deduplicated, still before the cut-off."""
    log = _log()
    samples = pl.DataFrame(
        {"user": [0, 0], "session": [-1, -1], "split": ["train", "test"], "ts_ms": [50, 4000],
         "history": [[11, 12, log["item"][0]], [19]], "history_ts": [[-200, -100, 0], [3500]]},
        schema_overrides={"user": pl.Int32, "history": pl.List(pl.Int32)},
    )
    base, _ = train_positives(log, samples)
    more, counts = train_positives(log, samples, include_histories=True)
    added = more.join(base, on=["user", "item", "ts_ms"], how="anti")
    assert sorted(added["item"].to_list()) == [11, 12], f"expected the two prior positives, got {added}"
    assert counts["added_from_histories"] == 2, f"duplicate of a logged positive was added: {counts}"
    assert more.filter((pl.col("user") == 0) & (pl.col("item") == 19)).height == 0, "a test sample's history joined the training positives"
