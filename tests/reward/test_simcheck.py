"""Simulator agreement check: sessions reach the judge grouped by (length, day), in the world's ids."""

from __future__ import annotations

import numpy as np

from onerec.reward.simcheck import _correlations, judge_sessions


class FakeWorld:
    """Records calls; the 'expected reward' is a known function of the ids so placement can be checked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def expected_reward(self, user_ids: np.ndarray, item_ids: np.ndarray, day: int) -> dict[str, np.ndarray]:
        assert item_ids.ndim == 2 and (item_ids >= 0).all(), "padding must never reach the judge"
        self.calls.append((len(user_ids), item_ids.shape[1], day))
        return {"reward": item_ids.sum(1) + 1000.0 * user_ids + 0.5 * day}


def test_judge_groups_by_length_and_day_and_maps_ids() -> None:
    """Each (length, day) group is one judge call; results land on their own rows; ids go through *_orig."""
    sessions = np.array([[0, 1, -1], [2, 3, 4], [1, 2, -1], [4, 0, -1]])
    users = np.array([0, 1, 1, 0])
    days = np.array([3, 3, 3, 4])
    item_orig, user_orig = np.arange(5) * 10, np.array([7, 9])
    world = FakeWorld()
    out = judge_sessions(world, users, sessions, days, item_orig, user_orig)
    assert sorted(world.calls) == [(1, 2, 4), (1, 3, 3), (2, 2, 3)], world.calls
    expected = [10 + 7000 + 1.5, 90 + 9000 + 1.5, 30 + 9000 + 1.5, 40 + 7000 + 2.0]
    np.testing.assert_allclose(out["reward"], expected, err_msg="judge outputs misplaced or ids not mapped")


def test_within_user_spearman_uses_each_users_candidates_only() -> None:
    """Within-user Spearman ranks a user's own candidates: a per-user offset in the RM does not matter."""
    judge = {"reward": np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])}
    rm = {"reward": np.array([10.0, 20.0, 30.0, -5.0, -4.0, -3.0])}  # right order inside each user
    group = np.array([0, 0, 0, 1, 1, 1])
    entry = _correlations(rm, judge, np.ones(6, bool), group)
    assert entry["within_user_spearman_reward"] == 1.0, entry
    assert entry["spearman_reward"] < 1.0, "the pooled correlation sees the offset"


def test_generated_sessions_are_valid_distinct_and_capped(tiny_pipeline_run) -> None:
    """A run's generated sessions for the agreement check: `beams` per history, valid distinct items, at most
    the model's own session length even when more is asked."""
    from onerec.checkpoint import load_run
    from onerec.reward.simcheck import generated_sessions

    model, _ = load_run(tiny_pipeline_run / "model")
    n_items, cap = int(model.item_codes.shape[0]), int(model.config.max_session_items)
    history = np.full((4, 12), -1, np.int64)
    history[:, -5:] = np.arange(20).reshape(4, 5) % n_items
    out = generated_sessions(tiny_pipeline_run / "model", history, cap + 4, beams=3)
    assert out.shape == (12, cap), out.shape
    assert ((out >= 0) & (out < n_items)).all(), "generated an id outside the catalogue"
    assert all(len(set(row)) == cap for row in out.tolist()), "a generated session repeats an item"


def test_without_session_effects_removes_exactly_the_session_context(tmp_path) -> None:
    """The pointwise judge (the ceiling of a pointwise RM) scores a one-author, one-tag session above the full
    judge (no fatigue), leaves the original world untouched, and equals the full judge on a world built without
    session effects."""
    from onerec.reward.simcheck import without_session_effects
    from onerec.simulate.config import SimulateConfig
    from onerec.simulate.world import World
    from onerec.simulate.writer import generate

    cfg = {"users": 60, "items": 80, "days": 1, "seed": 3, "calibration_requests": 500}
    generate(SimulateConfig(**cfg), tmp_path / "w")
    world = World.load(tmp_path / "w")
    primary = world.item_tags[:, 0]
    values, counts = np.unique(primary[primary >= 0], return_counts=True)
    assert counts.max() >= 4, "the fixture world needs a tag with 4 items"
    items = world.item_ids[np.flatnonzero(primary == values[counts.argmax()])[:4]][None, :]  # one tag: fatigue only
    users = world.user_ids[:1]
    full = world.expected_reward(users, items, 0)["reward"]
    flat_world = without_session_effects(world)
    flat = flat_world.expected_reward(users, items, 0)["reward"]
    assert world.config.tag_fatigue > 0 and flat_world.config.tag_fatigue == 0, "the original world was changed"
    assert flat[0] > full[0], f"switching fatigue off should raise the reward: {flat[0]} vs {full[0]}"
    generate(SimulateConfig(**cfg, tag_fatigue=0.0, author_fatigue=0.0, novelty_bonus=0.0), tmp_path / "w0")
    w0 = World.load(tmp_path / "w0")
    np.testing.assert_allclose(without_session_effects(w0).expected_reward(users, items, 0)["reward"],
                               w0.expected_reward(users, items, 0)["reward"])
