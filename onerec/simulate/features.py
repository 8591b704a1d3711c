"""Item and user feature tables of the world: synthetic with realistic shapes, or the real KuaiRand ones.

Design choices
- Synthetic shapes come from the real KuaiRand-Pure tables (constants below were measured on
  ``../shared/datasets/kuairand_pure``): the duration quantiles of ``video_features_basic``, the tag
  count and the share of multi-tag videos, the user activity-degree shares, the category labels and the
  hour-of-day profile of the log. Authors own many videos (Pareto-tailed sizes) and mostly post in one
  tag; popularity is log-normal.
- ``--from DIR`` reads the official file names (``video_features_basic_pure.csv[.gz]``,
  ``user_features_pure.csv[.gz]``, optional ``video_features_statistic_pure*.csv[.gz]``) and keeps their
  real ids, tags, authors, music, durations and activity degrees; a random subset when fewer users or
  items are asked for. Missing durations are filled from the real duration distribution.
- Feature tables are returned as polars frames in the official column order and written unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from onerec.io import OnerecError
from onerec.simulate.config import SimulateConfig

# Percentiles (0,1,2,5,10,20,...,90,95,98,99,100) of video_duration (ms) in video_features_basic_pure.
DURATION_PERCENTILES = np.array([0, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 100], float)
DURATION_QUANTILES_MS = np.array(
    [5000, 7444, 8431, 10725, 14593, 24486, 40766, 62733, 81170, 100153, 129818, 170300, 237830, 303456,
     413666, 510023, 1177720], float)
# Impressions per hour of day (0..23) in the real standard log (hourmin // 100).
HOUR_COUNTS = np.array(
    [9310, 5574, 3715, 2246, 1812, 2031, 3718, 5758, 7405, 8913, 10328, 11593, 13200, 12932, 11762, 11750,
     12584, 13574, 13078, 12190, 12735, 13193, 14725, 14203], float)
# Impressions per tab id 0..14 in the real standard log.
TAB_COUNTS = np.array([20254, 173008, 6909, 350, 13647, 658, 11208, 138, 1083, 148, 59, 239, 533, 76, 19], float)
ACTIVE_DEGREES = {  # share of users in user_features_pure, and requests-per-day multiplier
    "full_active": (17959, 1.6), "high_active": (6158, 1.0), "middle_active": (2133, 0.6),
    "2_14_day_new": (635, 0.5), "low_active": (300, 0.3), "single_low_active": (68, 0.2),
    "30day_retention": (15, 0.3), "day_new": (11, 0.3), "UNKNOWN": (6, 0.5),
}
UPLOAD_TYPES = {"LongImport": 2925, "Web": 2416, "ShortImport": 917, "Kmovie": 879, "LongPicture": 143,
                "UNKNOWN": 80, "PictureSet": 73, "LongCamera": 64, "ShortCamera": 43}
FOLLOW_BINS = ([0, 1, 11, 51, 101, 151, 251, 501],
               ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"])
FANS_BINS = ([0, 1, 10, 100, 1000, 5000, 10000, 100000, 1000000],
             ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)", "[10w,100w)", "[100w,1000w)"])
FRIEND_BINS = ([0, 1, 5, 30, 60, 120, 250], ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"])
REGISTER_BINS = ([8, 15, 31, 61, 91, 181, 366, 731],
                 ["8-14", "15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"])
ONEHOT_CARDINALITY = [2, 7, 50, 1471, 15, 34, 3, 118, 454, 7, 5, 5, 2, 2, 2, 2, 2, 2]
ONEHOT_FLOAT = {4, 12, 13, 14, 15, 16, 17}  # float columns (with nulls) in the real table
VIDEO_COLUMNS = ["video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
                 "video_duration", "server_width", "server_height", "music_id", "music_type", "tag"]


@dataclass
class Catalogue:
    """Item-side facts the world needs (row i = item index i)."""

    item_ids: np.ndarray  # (I,) int64 original video ids
    tags: np.ndarray  # (I, 3) int32 tag index into tag_vocab, -1 padded; column 0 is the primary tag
    tag_vocab: np.ndarray  # (T,) int64 original tag ids
    author_ids: np.ndarray  # (I,) int64
    duration_ms: np.ndarray  # (I,) int64 (> 0)
    log_popularity: np.ndarray  # (I,) float32, standardised
    features: pl.DataFrame  # video_features_basic layout


@dataclass
class Population:
    """User-side facts the world needs (row u = user index u)."""

    user_ids: np.ndarray  # (U,) int64 original user ids
    activity: np.ndarray  # (U,) float32 requests-per-day multiplier from the activity degree
    features: pl.DataFrame  # user_features layout


def sample_durations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Durations (ms) drawn from the real duration distribution (log-linear between measured percentiles)."""
    u = rng.uniform(0.0, 100.0, size=n)
    return np.exp(np.interp(u, DURATION_PERCENTILES, np.log(DURATION_QUANTILES_MS))).round().astype(np.int64)


def _standardise(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / (x.std() + 1e-9)).astype(np.float32)


def _categorical(rng: np.random.Generator, labels: list, counts, n: int) -> np.ndarray:
    p = np.asarray(counts, float)
    return np.asarray(labels, dtype=object)[rng.choice(len(labels), size=n, p=p / p.sum())]


def _bin_labels(values: np.ndarray, bins: tuple[list[int], list[str]]) -> list[str]:
    edges, labels = bins
    return [labels[i] for i in np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(labels) - 1)]


def synthetic_catalogue(cfg: SimulateConfig, rng: np.random.Generator) -> Catalogue:
    n, n_tags = cfg.items, cfg.n_tags
    tag_p = 1.0 / np.arange(1, n_tags + 1) ** 1.1  # Zipf-like (real: the top tag holds ~19 % of videos)
    tag_p = rng.permutation(tag_p / tag_p.sum())
    n_authors = max(1, int(np.ceil(n / cfg.videos_per_author)))
    author_weight = rng.pareto(2.0, size=n_authors) + 1.0  # a few prolific authors, many small ones
    author_of = rng.choice(n_authors, size=n, p=author_weight / author_weight.sum())
    author_tag = rng.choice(n_tags, size=n_authors, p=tag_p)
    primary = np.where(rng.random(n) < 0.7, author_tag[author_of], rng.choice(n_tags, size=n, p=tag_p))
    second = np.where(rng.random(n) < cfg.second_tag_prob, rng.choice(n_tags, size=n, p=tag_p), -1)
    second[second == primary] = -1
    third = np.where((second >= 0) & (rng.random(n) < 0.02), rng.choice(n_tags, size=n, p=tag_p), -1)
    third[(third == primary) | (third == second)] = -1
    tags = np.stack([primary, second, third], axis=1).astype(np.int32)  # (I, 3)
    author_ids = (1 + rng.choice(8_999_999, size=n_authors, replace=False))[author_of].astype(np.int64)
    duration = sample_durations(rng, n)
    log_pop = rng.normal(0.0, cfg.popularity_sigma, size=n)
    n_music = max(1, int(0.9 * n))
    music_pool = 10**9 + rng.choice(8 * 10**9, size=n_music, replace=False)
    music = music_pool[np.minimum(rng.zipf(1.5, size=n) - 1, n_music - 1)]
    upload = cfg.start.toordinal() - rng.integers(1, 31, size=n)
    import datetime as dt

    tag_text = [",".join(str(t) for t in row if t >= 0) for row in tags.tolist()]
    features = pl.DataFrame({
        "video_id": np.arange(n, dtype=np.int64),
        "author_id": author_ids,
        "video_type": _categorical(rng, ["NORMAL", "AD"], [99, 1], n).tolist(),
        "upload_dt": [dt.date.fromordinal(int(d)).isoformat() for d in upload],
        "upload_type": _categorical(rng, list(UPLOAD_TYPES), list(UPLOAD_TYPES.values()), n).tolist(),
        "visible_status": np.zeros(n),
        "video_duration": duration.astype(float),
        "server_width": np.where(rng.random(n) < 0.8, 720.0, 1080.0),
        "server_height": np.where(rng.random(n) < 0.8, 1280.0, 1920.0),
        "music_id": music.astype(np.int64),
        "music_type": _categorical(rng, [9.0, 4.0, 8.0, 7.0], [6665, 657, 41, 14], n).astype(float),
        "tag": tag_text,
    })
    return Catalogue(np.arange(n, dtype=np.int64), tags, np.arange(n_tags, dtype=np.int64), author_ids,
                     duration, _standardise(log_pop), features)


def synthetic_population(cfg: SimulateConfig, rng: np.random.Generator, top_tag: np.ndarray) -> Population:
    """Users with the real activity-degree shares; ``onehot_feat1/2`` reveal the user's top tag (cold start)."""
    n = cfg.users
    degrees = _categorical(rng, list(ACTIVE_DEGREES), [c for c, _ in ACTIVE_DEGREES.values()], n)
    follow = np.floor(rng.lognormal(4.5, 1.4, size=n)).astype(np.int64)
    fans = np.floor(rng.lognormal(3.5, 1.8, size=n)).astype(np.int64)
    friend = np.floor(rng.lognormal(2.5, 1.8, size=n)).astype(np.int64)
    register = np.clip(np.floor(rng.lognormal(6.6, 0.9, size=n)), 8, 5000).astype(np.int64)
    cols: dict[str, object] = {
        "user_id": np.arange(n, dtype=np.int64),
        "user_active_degree": degrees.tolist(),
        "is_lowactive_period": np.zeros(n, dtype=np.int64),
        "is_live_streamer": np.where(rng.random(n) < 0.226, 1, -124).astype(np.int64),
        "is_video_author": (rng.random(n) < 0.816).astype(np.int64),
        "follow_user_num": follow, "follow_user_num_range": _bin_labels(follow, FOLLOW_BINS),
        "fans_user_num": fans, "fans_user_num_range": _bin_labels(fans, FANS_BINS),
        "friend_user_num": friend, "friend_user_num_range": _bin_labels(friend, FRIEND_BINS),
        "register_days": register, "register_days_range": _bin_labels(register, REGISTER_BINS),
    }
    for j, card in enumerate(ONEHOT_CARDINALITY):
        values = rng.integers(0, card, size=n)
        if j == 1:
            values = top_tag % card
        elif j == 2:
            values = np.where(rng.random(n) < 0.8, top_tag % card, values)
        cols[f"onehot_feat{j}"] = values.astype(float) if j in ONEHOT_FLOAT else values.astype(np.int64)
    activity = np.array([ACTIVE_DEGREES[d][1] for d in degrees], np.float32)
    return Population(np.arange(n, dtype=np.int64), activity, pl.DataFrame(cols))


def _find(root: Path, stem: str) -> Path | None:
    for pattern in (f"{stem}.csv", f"{stem}.csv.gz", f"{stem}*.csv", f"{stem}*.csv.gz"):
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    return None


def real_catalogue(cfg: SimulateConfig, root: Path, rng: np.random.Generator) -> Catalogue:
    path = _find(root, "video_features_basic_pure")
    if path is None:
        raise OnerecError(f"--from {root}: no video_features_basic_pure.csv[.gz] (not a KuaiRand-Pure layout)")
    frame = pl.read_csv(path, infer_schema_length=None)
    missing = [c for c in VIDEO_COLUMNS if c not in frame.columns]
    if missing:
        raise OnerecError(f"{path}: missing column {missing[0]} ({len(missing)} missing)")
    if cfg.items > frame.height:
        raise OnerecError(f"--from {root}: {cfg.items} items asked, {path.name} has only {frame.height}")
    keep = np.sort(rng.choice(frame.height, size=cfg.items, replace=False))
    frame = frame[keep].select(VIDEO_COLUMNS)
    tag_lists = [[int(t) for t in s.split(",") if t.strip()] if s else [] for s in frame["tag"].to_list()]
    tag_vocab = np.array(sorted({t for ts in tag_lists for t in ts}) or [0], dtype=np.int64)
    index = {t: i for i, t in enumerate(tag_vocab.tolist())}
    tags = np.full((frame.height, 3), -1, np.int32)
    for row, ts in enumerate(tag_lists):
        for col, t in enumerate(ts[:3]):
            tags[row, col] = index[t]
    duration = frame["video_duration"].to_numpy().astype(float)
    bad = ~np.isfinite(duration) | (duration <= 0)
    duration[bad] = sample_durations(rng, int(bad.sum()))
    frame = frame.with_columns(pl.Series("video_duration", duration))
    log_pop = rng.normal(0.0, cfg.popularity_sigma, size=frame.height)
    stat_path = _find(root, "video_features_statistic_pure")
    if stat_path is not None:
        stats = pl.read_csv(stat_path, columns=["video_id", "show_cnt"], infer_schema_length=None)
        shows = frame.select("video_id").join(stats, on="video_id", how="left")["show_cnt"].to_numpy()
        known = np.isfinite(shows) & (shows > 0)
        log_pop[known] = np.log(shows[known])
    return Catalogue(frame["video_id"].to_numpy().astype(np.int64), tags, tag_vocab,
                     frame["author_id"].to_numpy().astype(np.int64), duration.round().astype(np.int64),
                     _standardise(log_pop), frame)


def real_population(cfg: SimulateConfig, root: Path, rng: np.random.Generator) -> Population:
    path = _find(root, "user_features_pure")
    if path is None:
        raise OnerecError(f"--from {root}: no user_features_pure.csv[.gz] (not a KuaiRand-Pure layout)")
    frame = pl.read_csv(path, infer_schema_length=None)
    for col in ("user_id", "user_active_degree"):
        if col not in frame.columns:
            raise OnerecError(f"{path}: missing column {col}")
    if cfg.users > frame.height:
        raise OnerecError(f"--from {root}: {cfg.users} users asked, {path.name} has only {frame.height}")
    frame = frame[np.sort(rng.choice(frame.height, size=cfg.users, replace=False))]
    activity = np.array([ACTIVE_DEGREES.get(d, (0, 0.5))[1] for d in frame["user_active_degree"].to_list()],
                        np.float32)
    return Population(frame["user_id"].to_numpy().astype(np.int64), activity, frame)
