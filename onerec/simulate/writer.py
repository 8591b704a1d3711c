"""Generate a world and write it in the official KuaiRand-Pure layout, day by day, in chunks.

Design choices
- Output directory (written atomically): ``log_standard_<m>_<dd>_to_<m>_<dd>_sim.csv`` (the official 19
  log columns plus ``request_id``, sorted by ``time_ms``), ``video_features_basic_sim.csv``,
  ``video_features_statistic_sim.csv`` (per-video daily means like the official statistic table, for the
  columns a log can produce), ``user_features_sim.csv``, ``world.json`` + ``world.safetensors`` and
  ``simulate_summary.json`` (calibration table, high-quality session share, timings), and with
  ``random_share`` > 0 ``log_random_<m>_<dd>_to_<m>_<dd>_sim.csv``: random-exposure requests (uniform items,
  ``is_rand = 1``, request ids after the standard log's), not counted in the calibration table or the
  statistic table.
- Randomness: one ``default_rng([seed, stream, day])`` per purpose and day, so the same config and seed
  give byte-identical files.
- Calibration first: a sample of requests from the logging policy fixes the response intercepts so the
  overall rates match the targets; then each day's requests are drawn, answered and written in chunks of
  at most ``chunk_rows`` impressions. Rows of late-night requests that spill past midnight are carried
  into the next day's chunk so the file stays sorted by time.
- Times are Beijing time (UTC+8): ``date`` = yyyymmdd and ``hourmin`` = hour * 100 of ``time_ms``. Items of
  a request follow each other: the next item starts when the previous one was watched, plus a short gap.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import polars as pl

from onerec.io import atomic_dir, write_json
from onerec.simulate.config import SimulateConfig
from onerec.simulate.judge import engagement
from onerec.simulate.policy import Requests, draw_user_requests, fill_requests, policy_tables, random_requests
from onerec.simulate.responses import ACTIONS, calibrate, sample_items
from onerec.simulate.world import World, build_world

LOG_COLUMNS = ["user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
               "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
               "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab", "request_id"]
REAL_RATES = {"click": 0.442, "long_view": 0.311, "like": 0.0171, "follow": 0.0013, "comment": 0.0025,
              "share": 0.0009, "hate": 0.00083}
STAT_EVENTS = ("show", "play", "complete_play", "valid_play", "long_time_play", "short_time_play", "like",
               "comment", "follow", "share")
BEIJING_MS = 8 * 3_600_000
DAY_MS = 86_400_000


def log_file_name(cfg: SimulateConfig, kind: str = "standard") -> str:
    first, last = cfg.start, cfg.start + dt.timedelta(days=cfg.days - 1)
    return f"log_{kind}_{first.month}_{first.day:02d}_to_{last.month}_{last.day:02d}_sim.csv"


def day_start_ms(cfg: SimulateConfig, day: int) -> int:
    """Epoch ms of Beijing midnight starting ``day`` (0 = start_date)."""
    return (cfg.start.toordinal() - dt.date(1970, 1, 1).toordinal() + day) * DAY_MS - BEIJING_MS


def _date_hourmin(time_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = time_ms + BEIJING_MS
    days = (local // DAY_MS).astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    return year * 10000 + month * 100 + dom, (local % DAY_MS) // 3_600_000 * 100


def calibrate_world(world: World) -> dict[str, float]:
    """Intercepts from ``calibration_requests`` requests drawn by the logging policy over the world's days."""
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 2])
    tables = policy_tables(world)
    p = world.user_activity.astype(np.float64)
    users = rng.choice(world.n_users, size=cfg.calibration_requests, p=p / p.sum())
    days = rng.integers(0, cfg.days, size=cfg.calibration_requests)
    xs, durations = [], []
    for day in range(cfg.days):
        chosen = users[days == day]
        if len(chosen) == 0:
            continue
        requests = fill_requests(world, tables, chosen, day, rng)
        valid = requests.items >= 0
        x = engagement(world, requests.users, np.where(valid, requests.items, 0), day)
        x = x + cfg.mood_sigma * rng.standard_normal((len(chosen), 1))
        xs.append(x[valid])
        durations.append(world.item_duration_ms[requests.items[valid]])
    return calibrate(np.concatenate(xs).astype(np.float64), np.concatenate(durations), cfg)


class _Stats:
    """Per-video daily counts, accumulated over days for the statistic table."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.days_shown = np.zeros(n_items, np.int64)
        self.cnt = {e: np.zeros(n_items, np.int64) for e in STAT_EVENTS}
        self.user_num = {e: np.zeros(n_items, np.int64) for e in STAT_EVENTS}
        self.play_duration = np.zeros(n_items, np.float64)
        self.progress = np.zeros(n_items, np.float64)
        self.comment_stay = np.zeros(n_items, np.float64)

    def add_day(self, users: np.ndarray, items: np.ndarray, r: dict[str, np.ndarray], dur: np.ndarray) -> None:
        events = {
            "show": np.ones(len(items), bool), "play": r["click"], "complete_play": r["watch_ms"] >= dur,
            "valid_play": r["click"] & (r["watch_ms"] >= np.minimum(7000, dur)), "long_time_play": r["long_view"],
            "short_time_play": r["click"] & (r["watch_ms"] < 3000),
            **{a: r[a] for a in ACTIONS},
        }
        self.days_shown += np.bincount(items, minlength=self.n_items) > 0
        for name, mask in events.items():
            self.cnt[name] += np.bincount(items[mask], minlength=self.n_items)
            pairs = np.unique(users[mask] * self.n_items + items[mask])
            self.user_num[name] += np.bincount(pairs % self.n_items, minlength=self.n_items)
        self.play_duration += np.bincount(items, weights=r["watch_ms"], minlength=self.n_items)
        self.progress += np.bincount(items, weights=np.minimum(r["watch_ms"] / dur, 1.0), minlength=self.n_items)
        self.comment_stay += np.bincount(items, weights=r["comment_stay_ms"], minlength=self.n_items)

    def frame(self, item_ids: np.ndarray) -> pl.DataFrame:
        days = np.maximum(self.days_shown, 1)
        cols: dict[str, np.ndarray] = {"video_id": item_ids, "counts": self.days_shown}
        for name in STAT_EVENTS:
            cols[f"{name}_cnt"] = self.cnt[name] / days
            cols[f"{name}_user_num"] = self.user_num[name] / days
            if name == "play":
                cols["play_duration"] = self.play_duration / days
            if name == "short_time_play":
                cols["play_progress"] = self.progress / np.maximum(self.cnt["show"], 1)
                cols["comment_stay_duration"] = self.comment_stay / days
        return pl.DataFrame(cols)


def _answer(world: World, requests, day: int, rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    """Sample responses for a chunk of requests; returns flat responses, the valid mask and per-request HQ."""
    cfg = world.config
    valid = requests.items >= 0  # (R, M)
    items = np.where(valid, requests.items, 0)
    x = engagement(world, requests.users, items, day) + cfg.mood_sigma * rng.standard_normal((len(items), 1))
    flat_items = items[valid]
    r = sample_items(rng, x[valid].astype(np.float64), world.item_duration_ms[flat_items], world.intercepts, cfg)
    grid = {k: np.zeros(valid.shape, v.dtype) for k, v in r.items()}
    for k in grid:
        grid[k][valid] = r[k]
    explicit = (grid["like"] | grid["follow"] | grid["comment"] | grid["share"]).any(1)
    hq = ((grid["click"].sum(1) >= cfg.hq_min_clicks) & (grid["watch_ms"].sum(1) >= 1000 * cfg.hq_min_watch_s)
          & explicit)
    gap = rng.integers(300, 3000, size=valid.shape)
    step = np.where(valid, grid["watch_ms"] + gap, 0)
    offset = np.cumsum(step, axis=1) - step  # (R, M) time from the request start to each item
    r["offset_ms"] = (requests.start_ms[:, None] + offset)[valid]
    return r, valid, hq


def _log_frame(world: World, requests: Requests, r: dict, valid: np.ndarray, req_ids: np.ndarray, day: int,
               is_rand: int) -> pl.DataFrame:
    """Rows of the official log layout for answered ``requests`` (flat responses ``r``, mask ``valid``)."""
    cfg = world.config
    users = np.broadcast_to(requests.users[:, None], valid.shape)[valid]
    items = requests.items[valid]
    time_ms = day_start_ms(cfg, day) + r["offset_ms"]
    date, hourmin = _date_hourmin(time_ms)
    return pl.DataFrame({
        "user_id": world.user_ids[users], "video_id": world.item_ids[items], "date": date,
        "hourmin": hourmin, "time_ms": time_ms, "is_click": r["click"].astype(np.int64),
        "is_like": r["like"].astype(np.int64), "is_follow": r["follow"].astype(np.int64),
        "is_comment": r["comment"].astype(np.int64), "is_forward": r["share"].astype(np.int64),
        "is_hate": r["hate"].astype(np.int64), "long_view": r["long_view"].astype(np.int64),
        "play_time_ms": r["watch_ms"], "duration_ms": world.item_duration_ms[items],
        "profile_stay_time": r["profile_stay_ms"], "comment_stay_time": r["comment_stay_ms"],
        "is_profile_enter": r["profile_enter"].astype(np.int64),
        "is_rand": np.full(len(items), is_rand, np.int64),
        "tab": np.broadcast_to(requests.tabs[:, None], valid.shape)[valid], "request_id": req_ids,
    })


def _write_random_log(world: World, tmp: Path, day_requests: list[int], request_base: int) -> dict:
    """``log_random_*_sim.csv``: per day Binomial(logged requests, random_share) uniformly random requests.

    Users are drawn by activity; request ids continue after the standard log's. Own random stream
    ``[seed, 7, day]``, so the standard log does not depend on ``random_share``.
    """
    cfg = world.config
    out = {"file": None, "rows": 0, "requests": 0}
    if cfg.random_share <= 0:
        return out
    p = world.user_activity.astype(np.float64)
    frames = []
    for day in range(cfg.days):
        rng = np.random.default_rng([cfg.seed, 7, day])
        n = int(rng.binomial(day_requests[day], cfg.random_share))
        if n == 0:
            continue
        requests = random_requests(world, rng.choice(world.n_users, size=n, p=p / p.sum()), rng)
        r, valid, _ = _answer(world, requests, day, rng)
        req_ids = np.broadcast_to(request_base + np.arange(n)[:, None], valid.shape)[valid]
        frames.append(_log_frame(world, requests, r, valid, req_ids, day, is_rand=1))
        request_base += n
        out["requests"] += n
    log = pl.concat(frames).sort("time_ms", maintain_order=True) if frames else pl.DataFrame(
        schema={c: pl.Int64 for c in LOG_COLUMNS})
    out["file"], out["rows"] = log_file_name(cfg, "random"), log.height
    log.write_csv(tmp / out["file"])
    return out


def generate(cfg: SimulateConfig, out: Path, progress: bool = False) -> dict:
    """Build, calibrate and write a world to ``out``; returns the summary dict (also ``simulate_summary.json``)."""
    t0 = time.perf_counter()
    world, catalogue, population = build_world(cfg)
    world.intercepts = calibrate_world(world)
    t_build = time.perf_counter() - t0
    tables = policy_tables(world)
    stats = _Stats(world.n_items)
    totals = {k: 0 for k in ("rows", "requests", "hq_requests", *REAL_RATES)}
    user_days, hq_user_days = 0, 0
    request_base = 0
    chunk_requests = max(1, cfg.chunk_rows // cfg.max_items)
    day_requests = [0] * cfg.days
    with atomic_dir(Path(out)) as tmp:
        with open(tmp / log_file_name(cfg), "wb") as fh:
            fh.write((",".join(LOG_COLUMNS) + "\n").encode())
            carry: pl.DataFrame | None = None
            for day in range(cfg.days):
                rng = np.random.default_rng([cfg.seed, 3, day])
                day_users = draw_user_requests(world, day, rng)
                frames, day_hq_users = [], []
                for lo in range(0, len(day_users), chunk_requests):
                    requests = fill_requests(world, tables, day_users[lo:lo + chunk_requests], day, rng)
                    r, valid, hq = _answer(world, requests, day, rng)
                    n_req = len(requests.users)
                    req_ids = np.broadcast_to(request_base + np.arange(n_req)[:, None], valid.shape)[valid]
                    users = np.broadcast_to(requests.users[:, None], valid.shape)[valid]
                    items = requests.items[valid]
                    dur = world.item_duration_ms[items]
                    stats.add_day(users, items, r, dur)
                    frames.append(_log_frame(world, requests, r, valid, req_ids, day, is_rand=0))
                    request_base += n_req
                    day_requests[day] += n_req
                    totals["rows"] += len(items)
                    totals["requests"] += n_req
                    totals["hq_requests"] += int(hq.sum())
                    for key in REAL_RATES:
                        totals[key] += int(r[key].sum())
                    day_hq_users.append(requests.users[hq])
                user_days += len(np.unique(day_users))
                hq_user_days += len(np.unique(np.concatenate(day_hq_users))) if day_hq_users else 0
                day_frame = pl.concat(([carry] if carry is not None else []) + frames) if frames or carry is not None \
                    else None
                if day_frame is None:
                    continue
                day_frame = day_frame.sort("time_ms", maintain_order=True)
                if day < cfg.days - 1:
                    spill = day_frame["time_ms"] >= day_start_ms(cfg, day + 1)
                    carry, day_frame = day_frame.filter(spill), day_frame.filter(~spill)
                else:
                    carry = None
                for lo in range(0, day_frame.height, cfg.chunk_rows):
                    day_frame.slice(lo, cfg.chunk_rows).write_csv(fh, include_header=False)
                if progress:
                    print(f"day {day + 1}/{cfg.days}: {totals['rows']:,} rows, {time.perf_counter() - t0:.1f}s",
                          flush=True)
        random_totals = _write_random_log(world, tmp, day_requests, request_base)
        catalogue.features.sort("video_id").write_csv(tmp / "video_features_basic_sim.csv")
        stats.frame(world.item_ids).write_csv(tmp / "video_features_statistic_sim.csv")
        population.features.sort("user_id").write_csv(tmp / "user_features_sim.csv")
        world.save(tmp)
        summary = _summary(cfg, world, totals, user_days, hq_user_days, t_build, time.perf_counter() - t0)
        summary["random_exposure"] = random_totals
        write_json(tmp / "simulate_summary.json", summary)
    return summary


def _summary(cfg: SimulateConfig, world: World, totals: dict, user_days: int, hq_user_days: int,
             t_build: float, t_total: float) -> dict:
    rows = max(totals["rows"], 1)
    targets = {"click": cfg.target_click, "long_view": cfg.target_long_view, "like": cfg.target_like,
               "follow": cfg.target_follow, "comment": cfg.target_comment, "share": cfg.target_share,
               "hate": cfg.target_hate}
    rates = {
        key: {"simulated": totals[key] / rows, "target": targets[key], "real_kuairand_pure": REAL_RATES[key],
              "relative_error": totals[key] / rows / targets[key] - 1.0}
        for key in REAL_RATES
    }
    return {
        "users": world.n_users, "items": world.n_items, "days": cfg.days, "seed": cfg.seed,
        "from": str(cfg.from_path) if cfg.from_path else None, "log_file": log_file_name(cfg),
        "rows": totals["rows"], "requests": totals["requests"], "items_per_request": rows / max(totals["requests"], 1),
        "rates": rates,
        "high_quality": {
            "rule": f">= {cfg.hq_min_clicks} clicked items, watch >= {cfg.hq_min_watch_s} s, >= 1 like/follow/comment/share",
            "requests": totals["hq_requests"], "request_share": totals["hq_requests"] / max(totals["requests"], 1),
            "user_days_with_one": hq_user_days, "user_day_share": hq_user_days / max(user_days, 1),
        },
        "intercepts": world.intercepts, "seconds": {"build_and_calibrate": t_build, "total": t_total},
    }
