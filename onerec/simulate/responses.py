"""Ground-truth responses: session effects, per-item outcome probabilities, their expectations and samples.

Design choices
- One *engagement* logit per shown item: ``x = affinity + session context + user bias + request mood``.
  The session context depends only on the shown list (never on sampled responses), so expected session
  outcomes are exact functions of the list: position decay ``-position_decay * k``, fatigue
  ``-tag_fatigue * (#earlier items of the same primary tag) - author_fatigue * (#earlier items of the same
  author)``, and a novelty bonus for an item whose primary tag is new in the session. A diverse session of
  well-liked tags therefore beats a session repeating the user's favourite tag, which a pointwise model of
  (user, item) cannot see.
- Given ``x`` the item's responses are independent:
  click ~ Bernoulli(sigmoid(c0 + click_slope x));
  clicked watch = duration * min(R, watch_max_ratio), log R ~ N(w0 + watch_slope x + watch_duration_slope
  log(duration / 60 s), watch_sigma); unclicked watch = min(duration, LogNormal(log skip_watch_ms, skip_sigma));
  long_view = watch >= min(long_view_ms, duration) (the rule the real log follows in 99.8 % of rows);
  like / follow / comment / share ~ Bernoulli(sigmoid(a0 + action_slope x)), times
  ``unclicked_action_ratio`` when not clicked; hate ~ Bernoulli(sigmoid(h0 - action_slope x)).
- Every expectation is closed form given ``x`` (normal CDF, capped log-normal mean); the request mood is
  integrated out by Gauss-Hermite quadrature in :mod:`onerec.simulate.judge`.
- The intercepts (c0, w0, a0 per action, h0) are calibrated by bisection so that the overall rates under
  the logging policy hit the configured targets (real KuaiRand-Pure rates by default).
"""

from __future__ import annotations

import numpy as np

from onerec.simulate.config import SimulateConfig

DURATION_REF_MS = 60_000.0
ACTIONS = ("like", "follow", "comment", "share")
PROFILE_ENTER_RATE = 0.0185  # real is_profile_enter rate
COMMENT_STAY_PROB = 0.10  # share of clicked impressions that open the comments (real: 4.4 % of rows)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF via erfc (Numerical Recipes ``erfcc``, fractional error < 1.2e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


def capped_lognormal_mean(mu: np.ndarray, sigma: float, cap: np.ndarray) -> np.ndarray:
    """E[min(X, cap)] for log X ~ N(mu, sigma^2)."""
    log_cap = np.log(cap)
    below = np.exp(mu + 0.5 * sigma**2) * normal_cdf((log_cap - mu - sigma**2) / sigma)
    return below + cap * (1.0 - normal_cdf((log_cap - mu) / sigma))


def session_context(primary_tags: np.ndarray, authors: np.ndarray, cfg: SimulateConfig) -> np.ndarray:
    """Logit offset of each position given the shown list: (B, m) tags / authors -> (B, m) float32.

    Tag -1 (unknown) never counts as a repeat.
    """
    m = primary_tags.shape[1]
    earlier = np.tri(m, m, -1, dtype=bool)  # [k, j] = j < k
    known = primary_tags >= 0
    same_tag = (primary_tags[:, :, None] == primary_tags[:, None, :]) & known[:, :, None]  # (B, m, m)
    n_tag = (same_tag & earlier).sum(-1)  # (B, m)
    n_author = ((authors[:, :, None] == authors[:, None, :]) & earlier).sum(-1)  # (B, m)
    position = np.arange(m)[None, :]
    novel = (n_tag == 0) & (position > 0) & known
    return (-cfg.position_decay * position - cfg.tag_fatigue * n_tag - cfg.author_fatigue * n_author
            + cfg.novelty_bonus * novel).astype(np.float32)


def watch_mu(x: np.ndarray, duration_ms: np.ndarray, w0: float, cfg: SimulateConfig) -> np.ndarray:
    return w0 + cfg.watch_slope * x + cfg.watch_duration_slope * np.log(duration_ms / DURATION_REF_MS)


def long_view_threshold(duration_ms: np.ndarray, cfg: SimulateConfig) -> np.ndarray:
    return np.minimum(cfg.long_view_ms, duration_ms)


def item_expectations(x: np.ndarray, duration_ms: np.ndarray, icpt: dict[str, float],
                      cfg: SimulateConfig) -> dict[str, np.ndarray]:
    """Expected per-item outcomes given engagement ``x`` (any shape) and durations (same shape).

    Keys: ``click``, ``watch_ms``, ``long_view``, ``like``, ``follow``, ``comment``, ``share``, ``hate``.
    """
    dur = duration_ms.astype(np.float64)
    p_click = sigmoid(icpt["click"] + cfg.click_slope * x)
    mu = watch_mu(x, dur, icpt["watch"], cfg)
    threshold = long_view_threshold(dur, cfg)
    watch_click = dur * capped_lognormal_mean(mu, cfg.watch_sigma, np.full_like(mu, cfg.watch_max_ratio))
    long_click = 1.0 - normal_cdf((np.log(threshold / dur) - mu) / cfg.watch_sigma)
    mu_skip = np.log(cfg.skip_watch_ms)
    watch_skip = capped_lognormal_mean(np.full_like(dur, mu_skip), cfg.skip_sigma, dur)
    long_skip = 1.0 - normal_cdf((np.log(threshold) - mu_skip) / cfg.skip_sigma)
    out = {
        "click": p_click,
        "watch_ms": p_click * watch_click + (1.0 - p_click) * watch_skip,
        "long_view": p_click * long_click + (1.0 - p_click) * long_skip,
    }
    engaged = p_click + cfg.unclicked_action_ratio * (1.0 - p_click)
    for action in ACTIONS:
        out[action] = sigmoid(icpt[action] + cfg.action_slope * x) * engaged
    out["hate"] = sigmoid(icpt["hate"] - cfg.action_slope * x)
    return out


def sample_items(rng: np.random.Generator, x: np.ndarray, duration_ms: np.ndarray, icpt: dict[str, float],
                 cfg: SimulateConfig) -> dict[str, np.ndarray]:
    """One draw of every logged response for items with engagement ``x`` (n,) and durations (n,)."""
    n = x.shape[0]
    dur = duration_ms.astype(np.float64)
    click = rng.random(n) < sigmoid(icpt["click"] + cfg.click_slope * x)
    ratio = np.minimum(np.exp(watch_mu(x, dur, icpt["watch"], cfg) + cfg.watch_sigma * rng.standard_normal(n)),
                       cfg.watch_max_ratio)
    skip = np.minimum(np.exp(np.log(cfg.skip_watch_ms) + cfg.skip_sigma * rng.standard_normal(n)), dur)
    watch = np.where(click, np.floor(dur * ratio), np.floor(skip)).astype(np.int64)
    out = {"click": click, "watch_ms": watch, "long_view": watch >= long_view_threshold(dur, cfg)}
    engaged = np.where(click, 1.0, cfg.unclicked_action_ratio)
    for action in ACTIONS:
        out[action] = rng.random(n) < sigmoid(icpt[action] + cfg.action_slope * x) * engaged
    out["hate"] = rng.random(n) < sigmoid(icpt["hate"] - cfg.action_slope * x)
    # Side signals of the official layout (not part of the judge).
    out["profile_enter"] = rng.random(n) < sigmoid(icpt["profile"] + cfg.action_slope * x) * engaged
    opens_comments = out["comment"] | (click & (rng.random(n) < COMMENT_STAY_PROB))
    out["comment_stay_ms"] = np.where(
        opens_comments, np.minimum(np.floor(rng.lognormal(np.log(6000.0), 1.0, n)), 300_000), 0).astype(np.int64)
    stays = out["profile_enter"] & (rng.random(n) < 0.005)
    out["profile_stay_ms"] = np.where(stays, np.floor(rng.lognormal(np.log(20000.0), 1.0, n)), 0).astype(np.int64)
    return out


def _bisect(f, target: float, lo: float = -30.0, hi: float = 30.0, steps: int = 40) -> float:
    """Root of the increasing function ``f(c) = target`` on [lo, hi]."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibrate(x: np.ndarray, duration_ms: np.ndarray, cfg: SimulateConfig) -> dict[str, float]:
    """Intercepts so that the mean expected rates over the sample (x, duration) hit the config's targets.

    ``x`` (n,) are engagements of impressions drawn from the logging policy (moods included).
    """
    dur = duration_ms.astype(np.float64)
    icpt: dict[str, float] = {}
    icpt["click"] = _bisect(lambda c: sigmoid(c + cfg.click_slope * x).mean(), cfg.target_click)
    p_click = sigmoid(icpt["click"] + cfg.click_slope * x)
    threshold = long_view_threshold(dur, cfg)
    long_skip = 1.0 - normal_cdf((np.log(threshold) - np.log(cfg.skip_watch_ms)) / cfg.skip_sigma)

    def long_view_rate(w0: float) -> float:
        mu = watch_mu(x, dur, w0, cfg)
        long_click = 1.0 - normal_cdf((np.log(threshold / dur) - mu) / cfg.watch_sigma)
        return float((p_click * long_click + (1.0 - p_click) * long_skip).mean())

    icpt["watch"] = _bisect(long_view_rate, cfg.target_long_view)
    engaged = p_click + cfg.unclicked_action_ratio * (1.0 - p_click)
    targets = {"like": cfg.target_like, "follow": cfg.target_follow, "comment": cfg.target_comment,
               "share": cfg.target_share, "profile": PROFILE_ENTER_RATE}
    for action, target in targets.items():
        icpt[action] = _bisect(lambda c: (sigmoid(c + cfg.action_slope * x) * engaged).mean(), target)
    icpt["hate"] = _bisect(lambda c: sigmoid(c - cfg.action_slope * x).mean(), cfg.target_hate)
    return icpt
