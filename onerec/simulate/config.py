"""``SimulateConfig``: every knob of the simulated world, its logging policy and its calibration targets.

Design choices
- Sizes, seed and start date say *what* world is built; the response parameters (slopes, session-effect
  strengths, noise) say *how* users behave; the ``target_*`` rates are what the intercepts are calibrated
  to (the real KuaiRand-Pure rates by default), so changing a slope does not move the overall rates.
- The high-quality session rule used for the report (``hq_*``) mirrors OneRec's rule: at least
  ``hq_min_clicks`` items watched (clicked), total watch time at least ``hq_min_watch_s`` seconds and at
  least one like / follow / comment / share.
- ``random_share`` > 0 adds a random-exposure log (like KuaiRand's ``log_random_*``): extra requests whose
  items are drawn uniformly from the catalogue, answered by the same response model; it is drawn from its
  own random stream, so the standard log is the same whatever its value.
- ``reward_weights`` define the judge's scalar ``reward`` (documented in :mod:`onerec.simulate.judge`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from onerec.config import ConfigError

REWARD_KEYS = ("swt", "vtr", "wtr", "ltr", "ctr", "cmtr", "shtr")


def _default_reward_weights() -> dict[str, float]:
    # swt is in seconds per session, the rest are per-item rates: one minute of watch time weighs as much
    # as one long view per item; explicit actions are rarer and weigh more.
    return {"swt": 1.0 / 60.0, "vtr": 1.0, "wtr": 20.0, "ltr": 5.0, "ctr": 0.0, "cmtr": 10.0, "shtr": 20.0}


@dataclass
class SimulateConfig:
    """The simulated world (``[simulate]`` table)."""

    users: int = 5000
    items: int = 3000
    days: int = 14
    seed: int = 0
    start_date: str = "2022-04-25"
    from_path: Path | None = None  # a KuaiRand-Pure directory: use its real video / user features

    # catalogue (synthetic mode)
    n_tags: int = 46  # KuaiRand-Pure has 46 tag ids
    videos_per_author: float = 4.0  # mean; author sizes are Pareto-tailed
    second_tag_prob: float = 0.24  # share of videos with more than one tag (real: 0.24)
    popularity_sigma: float = 1.3  # log-normal spread of item popularity (real show counts: ~1.3)

    # users
    latent_dim: int = 8
    favourite_tags: float = 1.5  # mean extra favourite tags per user (1 + Poisson)
    favourite_boost: float = 2.0
    tag_noise: float = 0.5
    drift_per_day: float = 0.05  # radians per day the interests rotate towards their second state
    user_bias_sigma: float = 0.5  # per-user engagement bias
    mood_sigma: float = 0.6  # per-request random effect shared by the request's items
    requests_per_user_day: float = 0.6  # mean over users (activity levels scale it)

    # affinity = tag_weight * tag interest + latent_weight * latent match + quality_weight * quality
    tag_weight: float = 1.0
    latent_weight: float = 1.0
    quality_weight: float = 0.5

    # session effects (logit units)
    position_decay: float = 0.05  # per position
    tag_fatigue: float = 0.35  # per earlier item of the same primary tag
    author_fatigue: float = 0.6  # per earlier item of the same author
    novelty_bonus: float = 0.15  # item whose primary tag is new in the session (position > 0)

    # responses
    click_slope: float = 1.0
    watch_slope: float = 0.35  # log watch ratio per unit of engagement
    watch_duration_slope: float = -0.35  # log watch ratio per log(duration / median)
    watch_sigma: float = 0.8
    watch_max_ratio: float = 2.0  # replays: watch time is capped at this multiple of the duration
    skip_watch_ms: float = 1800.0  # median watch time of an unclicked impression (real: 1.8 s)
    skip_sigma: float = 0.8
    long_view_ms: float = 18000.0  # long_view = watch >= min(this, duration) (matches the real log 99.8 %)
    action_slope: float = 0.8
    # P(action | not clicked) / P(action | clicked) at equal engagement; with the lower engagement of
    # unclicked items the observed like ratio comes out near the real ~0.1-0.2.
    unclicked_action_ratio: float = 0.6

    # logging policy
    min_items: int = 5
    max_items: int = 10
    pool_popular: int = 24  # candidates sampled by popularity per request
    pool_interest: int = 24  # candidates sampled from the user's (noisy) favourite tags
    popularity_exponent: float = 0.8
    policy_noise: float = 1.0  # noise added to the policy's affinity estimate before ranking
    interest_temperature: float = 1.0
    # random exposure (KuaiRand's log_random_*, is_rand=1): extra requests, this share of each day's logged
    # requests, of uniformly random distinct items; written to log_random_<start>_to_<end>_sim.csv (0 = none)
    random_share: float = 0.05

    # calibration targets (real KuaiRand-Pure standard-log rates)
    target_click: float = 0.442
    target_long_view: float = 0.311
    target_like: float = 0.0171
    target_follow: float = 0.0013
    target_comment: float = 0.0025
    target_share: float = 0.0009
    target_hate: float = 0.00083
    calibration_requests: int = 60000  # rare rates (share 0.0009) hinge on the tail of engagement

    # report: OneRec's high-quality session rule
    hq_min_clicks: int = 5
    hq_min_watch_s: float = 60.0

    reward_weights: dict[str, float] = field(default_factory=_default_reward_weights)
    chunk_rows: int = 1_000_000  # rows per CSV write

    def __post_init__(self) -> None:
        for name in ("users", "items", "days", "n_tags", "latent_dim", "min_items", "max_items",
                     "calibration_requests", "chunk_rows", "hq_min_clicks"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"simulate.{name} must be positive, got {getattr(self, name)}")
        if self.seed < 0:
            raise ConfigError(f"simulate.seed must be >= 0, got {self.seed}")
        if self.min_items > self.max_items:
            raise ConfigError(f"simulate.min_items ({self.min_items}) > max_items ({self.max_items})")
        if self.pool_popular + self.pool_interest < self.max_items:
            raise ConfigError(
                f"simulate.pool_popular + pool_interest ({self.pool_popular + self.pool_interest}) "
                f"must be >= max_items ({self.max_items})"
            )
        if not 0.0 <= self.random_share <= 1.0:
            raise ConfigError(f"simulate.random_share must be in [0, 1], got {self.random_share}")
        if self.items < 2 * self.max_items:
            raise ConfigError(f"simulate.items must be >= 2 * max_items = {2 * self.max_items}, got {self.items}")
        for name in ("videos_per_author", "requests_per_user_day", "watch_sigma", "skip_sigma",
                     "watch_max_ratio", "skip_watch_ms", "long_view_ms", "interest_temperature"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"simulate.{name} must be > 0, got {getattr(self, name)}")
        for name in ("target_click", "target_long_view", "target_like", "target_follow", "target_comment",
                     "target_share", "target_hate", "second_tag_prob", "unclicked_action_ratio"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"simulate.{name} must be in (0, 1), got {value}")
        if self.target_long_view >= self.target_click + 0.05 * (1 - self.target_click):
            raise ConfigError(
                f"simulate.target_long_view ({self.target_long_view}) must be well below target_click "
                f"({self.target_click}): long views come almost only from clicks"
            )
        unknown = sorted(set(self.reward_weights) - set(REWARD_KEYS))
        if unknown:
            raise ConfigError(f"simulate.reward_weights: unknown key {unknown[0]} (known: {', '.join(REWARD_KEYS)})")
        try:
            dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise ConfigError(f"simulate.start_date: {self.start_date!r} is not a YYYY-MM-DD date") from None

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)
