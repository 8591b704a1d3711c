"""The world: items, users with drifting latent interests, and the ground-truth affinity between them.

Design choices
- A user's interest in tags and in a low-rank "taste" space rotates between two states:
  ``z_u(t) = cos(w t) z0_u + sin(w t) z1_u`` (``w = drift_per_day``). It keeps the spread of interests
  constant over time, is defined for any day (also after the log ends) and needs no stored trajectory.
- Affinity of user ``u`` for item ``i`` on day ``t``:
  ``tag_weight * mean_{tags of i} z_u(t)[tag] + latent_weight * p_u(t) . q_i + quality_weight * quality_i``.
  Item taste vectors ``q_i`` are their author's vector plus noise, so authors matter beyond tags.
- Everything the judge needs (latent state, item facts, calibrated intercepts) is saved to
  ``world.safetensors`` + ``world.json``; :meth:`World.load` rebuilds the same world from a directory.
- Ids outside are the world's original (KuaiRand-style) ids; inside they are row indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onerec.config import from_dict, to_dict
from onerec.io import OnerecError, atomic_path, read_json, write_json
from onerec.simulate.config import SimulateConfig
from onerec.simulate.features import (
    Catalogue,
    Population,
    real_catalogue,
    real_population,
    synthetic_catalogue,
    synthetic_population,
)

WORLD_VERSION = 1
ARRAYS = ("user_ids", "user_activity", "user_bias", "interest0", "interest1", "taste0", "taste1", "item_ids",
          "item_tags", "tag_vocab", "item_authors", "item_taste", "item_quality", "item_log_popularity",
          "item_duration_ms")


@dataclass
class World:
    """A simulated world: latent state, item facts and the calibrated response intercepts."""

    config: SimulateConfig
    user_ids: np.ndarray  # (U,) int64
    user_activity: np.ndarray  # (U,) float32 mean requests per day
    user_bias: np.ndarray  # (U,) float32 engagement bias
    interest0: np.ndarray  # (U, T) float32
    interest1: np.ndarray  # (U, T) float32
    taste0: np.ndarray  # (U, d) float32
    taste1: np.ndarray  # (U, d) float32
    item_ids: np.ndarray  # (I,) int64
    item_tags: np.ndarray  # (I, 3) int32 tag indices, -1 padded, column 0 primary
    tag_vocab: np.ndarray  # (T,) int64 original tag ids
    item_authors: np.ndarray  # (I,) int64 author ids
    item_taste: np.ndarray  # (I, d) float32
    item_quality: np.ndarray  # (I,) float32
    item_log_popularity: np.ndarray  # (I,) float32 standardised
    item_duration_ms: np.ndarray  # (I,) int64
    intercepts: dict[str, float] = field(default_factory=dict)  # filled by calibration

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # ---- id translation -------------------------------------------------------------------------
    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        return _index_of(self.user_ids, np.asarray(user_ids), "user_id")

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        return _index_of(self.item_ids, np.asarray(item_ids), "video_id")

    # ---- latent state ---------------------------------------------------------------------------
    def _rotation(self, day: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angle = self.config.drift_per_day * np.asarray(day, dtype=np.float32)
        return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)

    def interests(self, users: np.ndarray, day: int) -> np.ndarray:
        """Tag interests of user indices ``users`` (B,) on ``day`` -> (B, T)."""
        c, s = self._rotation(day)
        return c * self.interest0[users] + s * self.interest1[users]

    def tastes(self, users: np.ndarray, day: int) -> np.ndarray:
        c, s = self._rotation(day)
        return c * self.taste0[users] + s * self.taste1[users]

    def affinity(self, users: np.ndarray, items: np.ndarray, day: int) -> np.ndarray:
        """Affinity of user indices ``users`` (B,) for item indices ``items`` (B, m) on ``day`` -> (B, m)."""
        cfg = self.config
        z = self.interests(users, day)  # (B, T)
        tags = self.item_tags[items]  # (B, m, 3)
        valid = tags >= 0
        per_tag = np.take_along_axis(z[:, None, :], np.where(valid, tags, 0).reshape(len(users), -1)[:, None, :],
                                     axis=2).reshape(tags.shape)  # (B, m, 3)
        tag_term = (per_tag * valid).sum(-1) / np.maximum(valid.sum(-1), 1)  # (B, m)
        taste = np.einsum("bd,bmd->bm", self.tastes(users, day), self.item_taste[items])  # (B, m)
        return (cfg.tag_weight * tag_term + cfg.latent_weight * taste
                + cfg.quality_weight * self.item_quality[items]).astype(np.float32)

    # ---- judge ----------------------------------------------------------------------------------
    def expected_reward(self, user_ids: np.ndarray, item_ids: np.ndarray, day: int) -> dict[str, np.ndarray]:
        """True expected session outcomes for sessions ``item_ids`` (B, m) shown to ``user_ids`` (B,) on ``day``.

        Ids are the world's original ids. See :func:`onerec.simulate.judge.expected_session`.
        """
        from onerec.simulate.judge import expected_session

        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        if item_ids.ndim != 2 or user_ids.ndim != 1 or len(user_ids) != len(item_ids):
            raise OnerecError(f"expected_reward: user_ids (B,) and item_ids (B, m), got {user_ids.shape} "
                              f"and {item_ids.shape}")
        return expected_session(self, self.user_index(user_ids), self.item_index(item_ids), int(day))

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        tensors = {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS}
        with atomic_path(directory / "world.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(directory / "world.json", {
            "version": WORLD_VERSION, "config": to_dict(self.config), "intercepts": self.intercepts,
            "users": self.n_users, "items": self.n_items, "tags": len(self.tag_vocab),
        })

    @classmethod
    def load(cls, directory: str | Path) -> World:
        from safetensors.numpy import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise OnerecError(f"world directory not found: {directory}")
        for name in ("world.json", "world.safetensors"):
            if not (directory / name).is_file():
                raise OnerecError(f"{directory}: missing {name} (not a world written by `onerec simulate`)")
        meta = read_json(directory / "world.json")
        if meta.get("version") != WORLD_VERSION or "config" not in meta or "intercepts" not in meta:
            raise OnerecError(f"{directory / 'world.json'}: unsupported world version {meta.get('version')!r}")
        tensors = load_file(str(directory / "world.safetensors"))
        missing = [name for name in ARRAYS if name not in tensors]
        if missing:
            raise OnerecError(f"{directory / 'world.safetensors'}: missing tensor {missing[0]} ({len(missing)} missing)")
        config = from_dict(SimulateConfig, meta["config"], "simulate")
        return cls(config=config, intercepts={k: float(v) for k, v in meta["intercepts"].items()},
                   **{name: tensors[name] for name in ARRAYS})


def _index_of(sorted_ids: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Row index of each id (ids are stored sorted); unknown ids are an error naming the first and the count."""
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, len(sorted_ids) - 1)
    bad = sorted_ids[pos] != ids
    if bad.any():
        raise OnerecError(f"unknown {what} {ids[bad].flat[0]} ({int(bad.sum())} unknown ids)")
    return pos.astype(np.int64)


def build_world(cfg: SimulateConfig) -> tuple[World, Catalogue, Population]:
    """Draw a world (uncalibrated: ``intercepts`` empty) and its feature tables from ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, 1])
    if cfg.from_path is not None:
        root = Path(cfg.from_path)
        if not root.is_dir():
            raise OnerecError(f"--from {root}: not a directory")
        catalogue = real_catalogue(cfg, root, rng)
    else:
        catalogue = synthetic_catalogue(cfg, rng)
    n_users, n_tags, dim = cfg.users, len(catalogue.tag_vocab), cfg.latent_dim

    # Users prefer popular tags more often than rare ones.
    tag_share = np.bincount(catalogue.tags[:, 0][catalogue.tags[:, 0] >= 0], minlength=n_tags) + 1.0
    tag_share /= tag_share.sum()

    def interest_state() -> np.ndarray:
        z = cfg.tag_noise * rng.standard_normal((n_users, n_tags))
        n_fav = 1 + rng.poisson(cfg.favourite_tags, size=n_users)
        for k in range(int(n_fav.max())):
            fav = rng.choice(n_tags, size=n_users, p=tag_share)
            z[np.arange(n_users)[n_fav > k], fav[n_fav > k]] += cfg.favourite_boost
        return z.astype(np.float32)

    interest0, interest1 = interest_state(), interest_state()
    scale = dim ** -0.25  # taste dot products have unit variance
    taste0 = (scale * rng.standard_normal((n_users, dim))).astype(np.float32)
    taste1 = (scale * rng.standard_normal((n_users, dim))).astype(np.float32)
    authors, author_index = np.unique(catalogue.author_ids, return_inverse=True)
    author_taste = rng.standard_normal((len(authors), dim))
    item_taste = (scale * (author_taste[author_index] + 0.5 * rng.standard_normal((len(author_index), dim)))
                  / np.sqrt(1.25)).astype(np.float32)
    quality = (0.5 * catalogue.log_popularity + np.sqrt(0.75) * rng.standard_normal(len(author_index)))
    user_bias = (cfg.user_bias_sigma * rng.standard_normal(n_users)).astype(np.float32)

    if cfg.from_path is not None:
        population = real_population(cfg, Path(cfg.from_path), rng)
    else:
        population = synthetic_population(cfg, rng, top_tag=interest0.argmax(1))
    heterogeneity = rng.gamma(2.0, 0.5, size=n_users)
    activity = population.activity * heterogeneity
    activity = (cfg.requests_per_user_day * activity / activity.mean()).astype(np.float32)

    order_u = np.argsort(population.user_ids, kind="stable")
    order_i = np.argsort(catalogue.item_ids, kind="stable")
    world = World(
        config=cfg, user_ids=population.user_ids[order_u], user_activity=activity[order_u],
        user_bias=user_bias[order_u], interest0=interest0[order_u], interest1=interest1[order_u],
        taste0=taste0[order_u], taste1=taste1[order_u], item_ids=catalogue.item_ids[order_i],
        item_tags=catalogue.tags[order_i], tag_vocab=catalogue.tag_vocab,
        item_authors=catalogue.author_ids[order_i], item_taste=item_taste[order_i],
        item_quality=quality[order_i].astype(np.float32),
        item_log_popularity=catalogue.log_popularity[order_i], item_duration_ms=catalogue.duration_ms[order_i],
    )
    if len(np.unique(world.user_ids)) != n_users or len(np.unique(world.item_ids)) != world.n_items:
        raise OnerecError("duplicate user_id or video_id in the feature tables")
    return world, catalogue, population
