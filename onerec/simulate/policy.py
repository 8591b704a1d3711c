"""The logging policy: which requests happen on a day and which 5-10 items each one shows.

Design choices
- Requests: each user makes Poisson(activity) requests a day; start times follow the real log's
  hour-of-day profile (Beijing time).
- Candidates, like a small cascade: ``pool_popular`` items drawn by popularity (``pop ** exponent``) and
  ``pool_interest`` drawn from tags sampled by the user's current interests (softmax / temperature),
  then by popularity within the tag.
- Ranking: the true affinity plus Gaussian noise (``policy_noise``): a good but imperfect ranker that
  ignores session effects, so its sessions repeat favourite tags and authors and leave room for a
  session-wise model to do better. The top ``n`` distinct candidates are shown in ranked order.
- Random exposure (:func:`random_requests`): uniformly random distinct items, no ranking (``is_rand=1``).
- All draws are vectorised over the requests of a chunk; positions past a request's length are -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.simulate.features import HOUR_COUNTS, TAB_COUNTS
from onerec.simulate.world import World


@dataclass
class Requests:
    users: np.ndarray  # (R,) int64 user indices
    items: np.ndarray  # (R, max_items) int64 item indices, -1 past the request's length
    lengths: np.ndarray  # (R,) int64
    start_ms: np.ndarray  # (R,) int64 offset from the day's midnight (Beijing time)
    tabs: np.ndarray  # (R,) int64


@dataclass
class PolicyTables:
    """Per-world samplers precomputed once: popularity CDF and per-tag popularity CDF ranges."""

    pop_cdf: np.ndarray  # (I,) cumulative popularity weights over item indices
    by_tag_items: np.ndarray  # (I,) item indices sorted by primary tag
    by_tag_cdf: np.ndarray  # (I,) cumulative popularity in that order
    tag_lo: np.ndarray  # (T,) cdf value where each tag's range starts
    tag_hi: np.ndarray  # (T,) and ends
    tag_has_items: np.ndarray  # (T,) bool


def policy_tables(world: World) -> PolicyTables:
    cfg = world.config
    weight = np.exp(cfg.popularity_exponent * cfg.popularity_sigma * world.item_log_popularity.astype(np.float64))
    pop_cdf = np.cumsum(weight)
    primary = world.item_tags[:, 0].astype(np.int64)
    order = np.argsort(primary, kind="stable")
    order = order[primary[order] >= 0]
    cdf = np.cumsum(weight[order])
    n_tags = len(world.tag_vocab)
    counts = np.bincount(primary[order], minlength=n_tags)
    ends = np.cumsum(counts)
    starts = ends - counts
    lo = np.where(starts > 0, cdf[np.maximum(starts - 1, 0)], 0.0)
    hi = np.where(counts > 0, cdf[np.maximum(ends - 1, 0)], lo)
    lo = np.where(starts > 0, lo, 0.0)
    return PolicyTables(pop_cdf, order, cdf, lo, hi, counts > 0)


def _draw_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def draw_user_requests(world: World, day: int, rng: np.random.Generator) -> np.ndarray:
    """User index of every request of ``day``, grouped by user (R,)."""
    n_req = rng.poisson(world.user_activity.astype(np.float64))
    return np.repeat(np.arange(world.n_users), n_req)


def fill_requests(world: World, tables: PolicyTables, users: np.ndarray, day: int,
                  rng: np.random.Generator) -> Requests:
    """Choose the shown items of requests made by ``users`` (R,) on ``day``."""
    cfg = world.config
    n_req = len(users)
    lengths = rng.integers(cfg.min_items, cfg.max_items + 1, size=n_req)
    popular = _draw_cdf(tables.pop_cdf, rng.random((n_req, cfg.pool_popular)) * tables.pop_cdf[-1])
    logits = world.interests(users, day) / cfg.interest_temperature  # (R, T)
    logits = np.where(tables.tag_has_items[None, :], logits, -np.inf)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    tag_cdf = np.cumsum(prob, axis=1)  # (R, T)
    u = rng.random((n_req, cfg.pool_interest, 1)) * tag_cdf[:, -1, None, None]
    tag = (tag_cdf[:, None, :] <= u).sum(-1)  # (R, P)
    tag = np.minimum(tag, len(tables.tag_lo) - 1)
    lo, hi = tables.tag_lo[tag], tables.tag_hi[tag]
    position = _draw_cdf(tables.by_tag_cdf, lo + rng.random(tag.shape) * (hi - lo))
    interest = tables.by_tag_items[position]
    pool = np.concatenate([popular, interest], axis=1)  # (R, P)
    score = world.affinity(users, pool, day) + cfg.policy_noise * rng.standard_normal(pool.shape)
    # Keep one copy of each candidate: sort by id, mark repeats.
    by_id = np.argsort(pool, axis=1, kind="stable")
    sorted_pool = np.take_along_axis(pool, by_id, 1)
    repeat = np.zeros_like(sorted_pool, dtype=bool)
    repeat[:, 1:] = sorted_pool[:, 1:] == sorted_pool[:, :-1]
    np.put_along_axis(score, by_id, np.where(repeat, -np.inf, np.take_along_axis(score, by_id, 1)), 1)
    top = np.argsort(-score, axis=1, kind="stable")[:, : cfg.max_items]
    items = np.take_along_axis(pool, top, 1)
    valid = np.isfinite(np.take_along_axis(score, top, 1)) & (np.arange(cfg.max_items)[None, :] < lengths[:, None])
    items = np.where(valid, items, -1)
    lengths = valid.sum(1)
    hour = rng.choice(24, size=n_req, p=HOUR_COUNTS / HOUR_COUNTS.sum())
    start = hour * 3_600_000 + rng.integers(0, 3_600_000, size=n_req)
    tabs = rng.choice(len(TAB_COUNTS), size=n_req, p=TAB_COUNTS / TAB_COUNTS.sum())
    return Requests(users, items.astype(np.int64), lengths.astype(np.int64), start.astype(np.int64), tabs)


def random_requests(world: World, users: np.ndarray, rng: np.random.Generator, chunk: int = 256) -> Requests:
    """Random-exposure requests of ``users`` (R,): distinct items drawn uniformly from the catalogue.

    The counterpart of KuaiRand's ``log_random_*`` (is_rand=1): no popularity, interest or ranking enters,
    so the responses to these items are an unbiased sample of the response model over the catalogue.
    """
    cfg = world.config
    n_req = len(users)
    lengths = rng.integers(cfg.min_items, cfg.max_items + 1, size=n_req)
    items = np.empty((n_req, cfg.max_items), np.int64)
    for lo in range(0, n_req, chunk):  # the k smallest of I uniforms: k distinct items, in random order
        u = rng.random((min(chunk, n_req - lo), world.n_items))
        top = np.argpartition(u, cfg.max_items - 1, axis=1)[:, : cfg.max_items]
        items[lo:lo + len(u)] = np.take_along_axis(top, np.argsort(np.take_along_axis(u, top, 1), axis=1), 1)
    items = np.where(np.arange(cfg.max_items)[None, :] < lengths[:, None], items, -1)
    hour = rng.choice(24, size=n_req, p=HOUR_COUNTS / HOUR_COUNTS.sum())
    start = hour * 3_600_000 + rng.integers(0, 3_600_000, size=n_req)
    tabs = rng.choice(len(TAB_COUNTS), size=n_req, p=TAB_COUNTS / TAB_COUNTS.sum())
    return Requests(users.astype(np.int64), items, lengths.astype(np.int64), start.astype(np.int64), tabs)
