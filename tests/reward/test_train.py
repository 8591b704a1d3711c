"""Training the reward model: it learns what is known to be liked, is seeded, handles missing labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from onerec.io import OnerecError
from onerec.reward.metrics import auc
from onerec.reward.train import item_rate_scores, prepare, session_rows, train_reward
from tests.reward.conftest import make_reward_data, tiny_config


@pytest.fixture(scope="module")
def liked_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # items of category 0 are always liked and long-viewed, the rest never; the last 6 items are never shown
    return make_reward_data(tmp_path_factory.mktemp("liked") / "data", n_users=30, n_items=40,
                            sessions_per_user=5, m=4, liked_category=0, unseen_items=6)


def test_ranks_known_liked_items_first(liked_data: Path, tmp_path: Path) -> None:
    """Trained where category-0 items are the liked ones, ltr ranks them above the rest, unseen ones included."""
    model = train_reward(liked_data, tmp_path / "rm", tiny_config(epochs=10, lr=1e-2, batch_size=32, towers=["ltr", "vtr"]))
    items = pl.read_parquet(liked_data / "items.parquet")
    category = items["category"].to_numpy()
    hist = torch.tensor([[0, 1, 2, 3]])
    singles = torch.arange(len(category))[None, :, None]  # (1, I, 1): every item as a one-item session
    p = model.score(hist, singles)["ltr"][0].numpy()
    liked = category == 0
    assert liked.sum() > 0 and (~liked).sum() > 0
    overall = auc(liked, p)
    assert overall > 0.95, f"liked items not ranked first: AUC {overall:.3f}"
    unseen = np.arange(len(category)) >= len(category) - 6
    both = unseen & liked, unseen & ~liked
    if both[0].any() and both[1].any():
        assert p[both[0]].min() > p[both[1]].max(), "never-shown liked items must outrank never-shown others"


def test_same_seed_same_weights(reward_data: Path, tmp_path: Path) -> None:
    """Two trainings with the same seed give identical weights; another seed gives different ones."""
    cfg = tiny_config(epochs=1, dropout=0.1)
    a = train_reward(reward_data, tmp_path / "a", cfg)
    b = train_reward(reward_data, tmp_path / "b", cfg)
    c = train_reward(reward_data, tmp_path / "c", tiny_config(epochs=1, dropout=0.1, seed=1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=f"{key} differs with the same seed")
    assert any(not torch.equal(sa[k], sc[k]) for k in sa), "seed 1 gave the same weights as seed 0"


def test_training_leaves_global_rng_alone(reward_data: Path, tmp_path: Path) -> None:
    """The caller's torch RNG state is the same before and after training."""
    before = torch.get_rng_state().clone()
    train_reward(reward_data, tmp_path / "rm", tiny_config(epochs=1))
    assert torch.equal(before, torch.get_rng_state()), "training consumed the global RNG"


def test_trains_on_all_sessions_and_drops_unlabelled_towers(reward_data: Path, tmp_path: Path) -> None:
    """All train-split sessions are used (not only high quality); a tower without labels (share) is dropped."""
    model = train_reward(reward_data, tmp_path / "rm", tiny_config(epochs=1))
    sessions = pl.read_parquet(reward_data / "sessions.parquet")
    n_train = sessions.filter(pl.col("split") == "train").height
    assert model.meta["train_sessions"] == n_train, (model.meta["train_sessions"], n_train)
    assert sessions.filter(pl.col("split") == "train")["high_quality"].sum() < n_train, "fixture needs low-quality sessions"
    assert "shtr" not in model.towers and model.meta["towers_dropped"] == ["shtr"], model.meta["towers_dropped"]
    with pytest.raises(OnerecError, match="no label for tower"):
        train_reward(reward_data, tmp_path / "rm2", tiny_config(epochs=1, missing_towers="error"))


def test_item_rate_baseline_orders_by_item_rates(tmp_path: Path) -> None:
    """The per-item rate baseline scores a session of high-rate items above one of low-rate items."""
    data = make_reward_data(tmp_path / "data", n_users=20, n_items=20, sessions_per_user=4, m=3, liked_category=0)
    cfg = tiny_config(towers=["ltr"])
    table, _, meta, towers = prepare(data, cfg)
    from onerec.reward.data import make_labels

    labels = make_labels(table, towers, cfg, meta["thresholds"])
    train, test = session_rows(table, ["train"]), session_rows(table, ["test"])
    scores = item_rate_scores(table, labels, train, test, towers, cfg)["ltr"]
    assert auc(labels.binary["ltr"][test], scores) > 0.95, "item rates must predict a deterministic like"


def test_missing_files_and_columns_are_clear_errors(reward_data: Path, tmp_path: Path) -> None:
    """A data directory without sessions.parquet, or with a column missing, is an OnerecError naming it."""
    with pytest.raises(OnerecError, match="sessions.parquet"):
        prepare(tmp_path, tiny_config())
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("samples.parquet", "items.parquet", "users.parquet"):
        (broken / name).write_bytes((reward_data / name).read_bytes())
    pl.read_parquet(reward_data / "sessions.parquet").drop("like").write_parquet(broken / "sessions.parquet")
    with pytest.raises(OnerecError, match="missing column.*like"):
        prepare(broken, tiny_config())


def test_match_features_learn_a_pure_session_effect(tmp_path: Path) -> None:
    """Where an item is liked iff no other item of its session shares its category, the RM with session match
    features ranks test sessions by their like rate almost perfectly; the pointwise model cannot (AUC ~ 0.5)."""
    from onerec.reward.data import make_labels

    data = make_reward_data(tmp_path / "data", n_users=40, n_items=30, sessions_per_user=7, m=4, repeat_fatigue=True)
    cfg = tiny_config(epochs=8, lr=1e-2, batch_size=32, towers=["ltr"], match_features=True)
    table, _, meta, towers = prepare(data, cfg)
    test = session_rows(table, ["test"])
    labels = make_labels(table, towers, cfg, meta["thresholds"])
    y = labels.binary["ltr"][test]
    assert 0 < y.mean() < 1, "the fixture needs liked and not-liked test sessions"
    history, sessions = torch.from_numpy(table.history[test]), torch.from_numpy(table.items[test])[:, None, :]
    aucs = {}
    for name, c in (("session", cfg), ("pointwise", dataclasses.replace(cfg, attention=False, match_features=False))):
        model = train_reward(data, tmp_path / name, c)
        aucs[name] = auc(y, model.score(history, sessions)["ltr"][:, 0].numpy())
    assert aucs["session"] > 0.9, f"match features did not learn the session effect: {aucs}"
    assert aucs["pointwise"] < 0.75, f"a pointwise model should not see a pure session effect: {aucs}"
