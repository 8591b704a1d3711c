"""The judge: agrees with sampled outcomes, prefers matched and diverse sessions, is exact in quadrature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onerec.simulate.judge import QUADRATURE_NODES, expected_session, monte_carlo_session
from onerec.simulate.world import World


def test_judge_matches_monte_carlo(tiny_world_dir: Path) -> None:
    """Exact expectations equal the mean of 4000 sampled responses within 4.5 standard errors (every key)."""
    world = World.load(tiny_world_dir)
    rng = np.random.default_rng(5)
    users = rng.choice(world.n_users, size=6, replace=False)
    items = np.stack([rng.choice(world.n_items, size=8, replace=False) for _ in users])
    exact = expected_session(world, users, items, day=1)
    means, errors = monte_carlo_session(world, users, items, day=1, samples=4000, rng=rng)
    for key in ("swt", "vtr", "ltr", "ctr", "reward"):
        z = np.abs(exact[key] - means[key]) / np.maximum(errors[key], 1e-12)
        assert z.max() < 4.5, f"{key}: exact {exact[key]} vs MC {means[key]} (z {z.max():.2f})"


def test_quadrature_converged(tiny_world_dir: Path) -> None:
    """The default Gauss-Hermite rule agrees with a 96-node rule to 1e-6 relative."""
    world = World.load(tiny_world_dir)
    rng = np.random.default_rng(6)
    users = rng.choice(world.n_users, size=32)
    items = rng.choice(world.n_items, size=(32, 6))
    a = expected_session(world, users, items, 0, nodes=QUADRATURE_NODES)
    b = expected_session(world, users, items, 0, nodes=96)
    for key in a:
        rel = np.abs(a[key] - b[key]) / np.maximum(np.abs(b[key]), 1e-12)
        assert rel.max() < 1e-6, f"{key}: relative quadrature error {rel.max():.2e}"


def test_matched_session_beats_random(tiny_world_dir: Path) -> None:
    """For most users the top-affinity items (distinct tags) earn more reward than random items."""
    world = World.load(tiny_world_dir)
    rng = np.random.default_rng(7)
    users = np.arange(64)
    all_items = np.broadcast_to(np.arange(world.n_items), (len(users), world.n_items))
    aff = world.affinity(users, all_items, 0)  # (B, I)
    matched = []
    for b in range(len(users)):
        seen, picked = set(), []
        for i in np.argsort(-aff[b]):
            tag = int(world.item_tags[i, 0])
            if tag not in seen:
                seen.add(tag)
                picked.append(i)
            if len(picked) == 6:
                break
        matched.append(picked)
    matched = np.array(matched)
    random = np.stack([rng.choice(world.n_items, size=6, replace=False) for _ in users])
    good = expected_session(world, users, matched, 0)["reward"]
    bad = expected_session(world, users, random, 0)["reward"]
    share = float((good > bad).mean())
    assert share > 0.9, f"matched beat random for only {share:.0%} of users"


def test_repeating_one_tag_scores_below_diverse(tiny_world_dir: Path) -> None:
    """Ten items of one tag score below ten items of ten tags when every item has the same affinity."""
    world = World.load(tiny_world_dir)
    # Flatten affinity so only the session effects differ: every item gets the same tags weight and taste.
    world.interest0[:] = 0.0
    world.interest1[:] = 0.0
    world.item_taste[:] = 0.0
    world.item_quality[:] = 0.0
    world.item_duration_ms[:] = 30_000
    world.item_authors[:] = np.arange(world.n_items)  # no author repeats
    world.item_tags[:] = -1
    world.item_tags[:10, 0] = 0  # items 0..9: all tag 0
    world.item_tags[10:20, 0] = np.arange(10)  # items 10..19: ten different tags
    users = np.array([0, 1, 2])
    same = np.broadcast_to(np.arange(10), (3, 10))
    diverse = np.broadcast_to(np.arange(10, 20), (3, 10))
    np.testing.assert_allclose(world.affinity(users, same, 0), world.affinity(users, diverse, 0),
                               err_msg="test setup: affinities must be equal")
    r_same = expected_session(world, users, same, 0)
    r_diverse = expected_session(world, users, diverse, 0)
    for key in ("reward", "swt", "ctr"):
        assert (r_same[key] < r_diverse[key]).all(), f"{key}: one-tag {r_same[key]} vs diverse {r_diverse[key]}"


def test_expected_reward_takes_original_ids(tiny_world_dir: Path) -> None:
    """World.expected_reward on original ids equals expected_session on the matching row indices."""
    world = World.load(tiny_world_dir)
    users = np.array([3, 7])
    items = np.array([[0, 5, 9, 11, 20], [1, 2, 3, 4, 6]])
    by_id = world.expected_reward(world.user_ids[users], world.item_ids[items], 1)
    by_index = expected_session(world, users, items, 1)
    for key in by_index:
        np.testing.assert_allclose(by_id[key], by_index[key], err_msg=key)
    assert set(by_id) == {"swt", "vtr", "wtr", "ltr", "ctr", "cmtr", "shtr", "reward"}, sorted(by_id)
