"""The logging policy: request sizes, distinct items, ranking by (noisy) affinity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from onerec.simulate.policy import fill_requests, policy_tables
from onerec.simulate.world import World


def test_requests_distinct_and_sized(tiny_world_dir: Path) -> None:
    """Every request shows min_items..max_items distinct items, padding only at the end."""
    world = World.load(tiny_world_dir)
    rng = np.random.default_rng(0)
    req = fill_requests(world, policy_tables(world), np.arange(world.n_users), 0, rng)
    cfg = world.config
    assert req.lengths.min() >= cfg.min_items and req.lengths.max() <= cfg.max_items, req.lengths
    for row, n in zip(req.items, req.lengths):
        assert (row[:n] >= 0).all() and (row[n:] == -1).all(), row
        assert len(set(row[:n].tolist())) == n, f"repeated item in {row[:n]}"


def test_noiseless_policy_ranks_by_affinity(tiny_world_dir: Path) -> None:
    """With policy_noise = 0 the shown items are in descending true affinity and beat unshown candidates on average."""
    world = World.load(tiny_world_dir)
    world.config = dataclasses.replace(world.config, policy_noise=0.0)
    users = np.arange(50)
    req = fill_requests(world, policy_tables(world), users, 0, np.random.default_rng(1))
    aff = world.affinity(users, np.where(req.items >= 0, req.items, 0), 0)
    for a, n in zip(aff, req.lengths):
        assert (np.diff(a[:n]) <= 1e-6).all(), f"not in descending affinity: {a[:n]}"
    random_items = np.random.default_rng(2).choice(world.n_items, size=(50, 10))
    shown = aff[:, 0].mean()
    assert shown > world.affinity(users, random_items, 0).mean() + 1.0, "policy's top item is not much better than random"


def test_random_requests_ignore_popularity(tiny_world_dir: Path) -> None:
    """Random-exposure requests show distinct items whose counts do not follow popularity (the policy's do)."""
    from onerec.reward.metrics import spearman
    from onerec.simulate.policy import random_requests

    world = World.load(tiny_world_dir)
    users = np.repeat(np.arange(world.n_users), 4)
    rnd = random_requests(world, users, np.random.default_rng(0), chunk=100)
    for row, n in zip(rnd.items, rnd.lengths):
        assert (row[:n] >= 0).all() and (row[n:] == -1).all() and len(set(row[:n].tolist())) == n, row
    pol = fill_requests(world, policy_tables(world), users, 0, np.random.default_rng(0))
    counts = {name: np.bincount(r.items[r.items >= 0], minlength=world.n_items) for name, r in
              (("random", rnd), ("policy", pol))}
    rho = {name: spearman(c.astype(float), world.item_log_popularity.astype(float)) for name, c in counts.items()}
    assert abs(rho["random"]) < 0.15 and rho["policy"] > 0.3, f"Spearman(count, popularity): {rho}"
    expected = counts["random"].sum() / world.n_items  # ~40 per item: a Poisson spread, no item left out
    assert counts["random"].min() > 0.3 * expected and counts["random"].max() < 2.0 * expected, counts["random"]
