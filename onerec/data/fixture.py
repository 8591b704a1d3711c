"""A small synthetic KuaiRand-layout folder, for tests and demos of every stage (no real data needed).

Design choices
- Same files and columns as the official release (plus ``request_id`` when ``requests=True``, like the
  simulator's world), so the real adapter reads it unchanged.
- Users are shown requests of ``request_size`` videos; each user prefers a few of ``n_topics`` topics
  (video tag), and clicks / long views / likes depend on that, so there is signal to learn.
- numpy ``default_rng(seed)``; same seed -> same files. Vectorised, no loop over rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

DAY_MS = 86_400_000
START_MS = 1_650_816_000_000  # 2022-04-25 00:00 Beijing time


def write_kuairand_fixture(
    folder: str | Path,
    n_users: int = 40,
    n_items: int = 120,
    days: int = 14,
    requests_per_day: float = 1.5,
    request_size: int = 6,
    n_topics: int = 6,
    seed: int = 0,
    requests: bool = False,
    suffix: str = "fixture",
) -> Path:
    """Write ``log_standard_*``, ``video_features_basic_*``, ``video_features_statistic_*``,
    ``user_features_*`` CSVs into ``folder`` and return it."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    topic = rng.integers(0, n_topics, n_items)  # (I,)
    duration = rng.integers(5_000, 120_000, n_items)  # (I,)
    taste = rng.dirichlet(np.full(n_topics, 0.3), n_users)  # (U, T)
    n_req = rng.poisson(requests_per_day * days, n_users) + 1  # (U,)
    req_user = np.repeat(np.arange(n_users), n_req)  # (R,)
    req_time = START_MS + rng.integers(0, days * DAY_MS, req_user.size)  # (R,)
    user = np.repeat(req_user, request_size)  # (N,)
    item = rng.integers(0, n_items, user.size)  # (N,)
    ts = np.repeat(req_time, request_size) + np.tile(np.arange(request_size) * 15_000, req_user.size)
    affinity = taste[user, topic[item]]  # (N,)
    click = rng.random(user.size) < 0.3 + 0.6 * affinity
    frac = np.clip(rng.beta(1 + 4 * affinity, 2), 0, 1.5)
    play = np.where(click, (frac * duration[item]).astype(np.int64), 0)
    long_view = (play >= 0.8 * duration[item]).astype(np.int64)
    like = (click & (rng.random(user.size) < 0.15 * affinity + 0.02)).astype(np.int64)
    follow = (click & (rng.random(user.size) < 0.03)).astype(np.int64)
    comment = (click & (rng.random(user.size) < 0.03)).astype(np.int64)
    forward = (click & (rng.random(user.size) < 0.02)).astype(np.int64)
    beijing = pl.from_epoch(pl.Series(ts), time_unit="ms").dt.offset_by("8h")
    log = pl.DataFrame({
        "user_id": user, "video_id": item,
        "date": beijing.dt.strftime("%Y%m%d").cast(pl.Int64), "hourmin": beijing.dt.hour().cast(pl.Int64) * 100,
        "time_ms": ts, "is_click": click.astype(np.int64), "is_like": like, "is_follow": follow,
        "is_comment": comment, "is_forward": forward, "is_hate": np.zeros(user.size, np.int64),
        "long_view": long_view, "play_time_ms": play, "duration_ms": duration[item],
        "profile_stay_time": np.zeros(user.size, np.int64), "comment_stay_time": np.zeros(user.size, np.int64),
        "is_profile_enter": np.zeros(user.size, np.int64), "is_rand": np.zeros(user.size, np.int64),
        "tab": rng.integers(0, 5, user.size),
    })
    if requests:
        log = log.with_columns(pl.Series("request_id", np.repeat(np.arange(req_user.size), request_size)))
    log = log.sort("time_ms")
    log.write_csv(folder / f"log_standard_4_25_to_5_08_{suffix}.csv")
    pl.DataFrame({
        "video_id": np.arange(n_items), "author_id": rng.integers(0, n_items // 3 + 1, n_items),
        "video_type": ["NORMAL"] * n_items, "upload_dt": ["2022-04-01"] * n_items,
        "upload_type": rng.choice(["ShortImport", "LongImport", "Kmovie"], n_items),
        "visible_status": np.zeros(n_items), "video_duration": duration.astype(np.float64),
        "server_width": np.full(n_items, 720.0), "server_height": np.full(n_items, 1280.0),
        "music_id": rng.integers(0, 10**9, n_items), "music_type": np.full(n_items, 9.0),
        "tag": [f"{t}" if i % 3 else f"{t},{(t + 1) % n_topics}" for i, t in enumerate(topic)],
    }).write_csv(folder / f"video_features_basic_{suffix}.csv")
    pl.DataFrame({
        "video_id": np.arange(n_items), "counts": np.full(n_items, days),
        "show_cnt": rng.integers(100, 10_000, n_items).astype(np.float64),
        "play_cnt": rng.integers(10, 5_000, n_items).astype(np.float64),
        "like_cnt": rng.integers(0, 500, n_items).astype(np.float64),
    }).write_csv(folder / f"video_features_statistic_{suffix}.csv")
    pl.DataFrame({
        "user_id": np.arange(n_users),
        "user_active_degree": rng.choice(["full_active", "high_active", "middle_active"], n_users),
        "is_lowactive_period": np.zeros(n_users, np.int64), "register_days": rng.integers(10, 2000, n_users),
        **{f"onehot_feat{k}": rng.integers(0, 5, n_users) for k in range(3)},
    }).write_csv(folder / f"user_features_{suffix}.csv")
    return folder
