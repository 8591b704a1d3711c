"""World state: persistence round trip, missing files, id translation, drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onerec.io import OnerecError
from tests.simulate.conftest import tiny_config


def test_world_load_round_trip(tiny_world_dir: Path) -> None:
    """World.load rebuilds arrays, config and intercepts exactly."""
    from onerec.simulate.world import ARRAYS, World, build_world

    world = World.load(tiny_world_dir)
    fresh, _, _ = build_world(tiny_config())
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(world, name), getattr(fresh, name), err_msg=name)
    assert set(world.intercepts) >= {"click", "watch", "like", "follow", "comment", "share"}, world.intercepts


def test_world_missing_parameters(tiny_world_dir: Path, tmp_path: Path) -> None:
    """A world directory without world.json is a clear error naming the file."""
    from onerec.simulate.world import World

    (tmp_path / "world.safetensors").write_bytes((tiny_world_dir / "world.safetensors").read_bytes())
    with pytest.raises(OnerecError, match="world.json"):
        World.load(tmp_path)


def test_unknown_ids_are_errors(tiny_world_dir: Path) -> None:
    """Judging an id the world does not have names it and the count."""
    from onerec.simulate.world import World

    world = World.load(tiny_world_dir)
    with pytest.raises(OnerecError, match="unknown video_id 999999 \\(1 unknown"):
        world.expected_reward(np.array([0]), np.array([[0, 1, 999999, 2, 3]]), 0)


def test_interests_drift_but_stay_correlated(tiny_world_dir: Path) -> None:
    """Interests on day 13 differ from day 0 yet stay positively correlated (slow drift, same spread)."""
    from onerec.simulate.world import World

    world = World.load(tiny_world_dir)
    users = np.arange(world.n_users)
    z0, z13 = world.interests(users, 0), world.interests(users, 13)
    corr = np.corrcoef(z0.ravel(), z13.ravel())[0, 1]
    assert 0.3 < corr < 0.99, f"day-0 / day-13 interest correlation {corr:.3f}"
    ratio = z13.std() / z0.std()
    assert 0.8 < ratio < 1.25, f"interest spread changed by {ratio:.2f}x"
