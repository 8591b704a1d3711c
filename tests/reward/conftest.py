"""Small data directories in the contract schema (docs/ARCHITECTURE.md §1) built by the reward tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.reward import RewardConfig

SPLITS = ("train", "train", "train", "train", "train", "valid", "test")


def make_reward_data(
    out: Path,
    n_users: int = 40,
    n_items: int = 60,
    sessions_per_user: int = len(SPLITS),
    m: int = 5,
    seed: int = 0,
    liked_category: int | None = None,
    unseen_items: int = 0,
    repeat_fatigue: bool = False,
) -> Path:
    """Write sessions/samples/items/users.parquet with labels drawn from a latent user-item affinity.

    With ``liked_category`` set, an item is liked and long-viewed iff its ``category`` feature equals it,
    and the last ``unseen_items`` items are never shown (only their features are known). With
    ``repeat_fatigue``, an item is liked and long-viewed iff no other item of its session has its category: a
    pure session effect that no pointwise model can see.
    """
    rng = np.random.default_rng(seed)
    item_z = rng.normal(size=(n_items, 3))
    user_z = rng.normal(size=(n_users, 3))
    category = np.argmax(item_z, axis=1).astype(np.int32)
    duration = rng.integers(5_000, 60_000, size=n_items)
    shown = n_items - unseen_items
    sessions, samples = [], []
    positives: dict[int, list[int]] = {u: [] for u in range(n_users)}
    sid = 0
    for s in range(sessions_per_user):
        for u in range(n_users):
            items = rng.choice(shown, size=m, replace=False)
            aff = item_z[items] @ user_z[u]  # (m,)
            if repeat_fatigue:
                cats = category[items]
                like = (cats[:, None] == cats[None, :]).sum(1) == 1
                long_view = like.copy()
            elif liked_category is None:
                like = rng.random(m) < 1 / (1 + np.exp(-(2 * aff - 2)))
                long_view = rng.random(m) < 1 / (1 + np.exp(-aff))
            else:
                like = category[items] == liked_category
                long_view = like.copy()
            ratio = np.clip(1 / (1 + np.exp(-aff)) + 0.1 * rng.normal(size=m), 0, 1)
            watch = (duration[items] * ratio).astype(np.int64)
            follow = rng.random(m) < 0.05 * like
            comment = rng.random(m) < 0.1 * like
            positive = long_view | like
            ts = 1_650_000_000_000 + (s * n_users + u) * 60_000
            split = SPLITS[min(s, len(SPLITS) - 1)] if sessions_per_user == len(SPLITS) else ("test" if s == sessions_per_user - 1 else "train")
            sessions.append({
                "session": sid, "user": u, "ts_ms": ts, "items": items.tolist(),
                "click": [1] * m, "watch_ms": watch.tolist(), "duration_ms": duration[items].tolist(),
                "long_view": long_view.astype(int).tolist(), "like": like.astype(int).tolist(),
                "follow": follow.astype(int).tolist(), "comment": comment.astype(int).tolist(), "share": None,
                "positive": positive.tolist(), "n_positive": int(positive.sum()),
                "watch_ms_total": int(watch.sum()), "high_quality": bool(positive.sum() >= 3), "split": split,
            })
            hist = positives[u][-50:]
            samples.append({
                "sample": sid, "user": u, "session": sid, "split": split, "history": list(hist),
                "history_ts": [ts - 1000] * len(hist), "target": items.tolist(),
                "target_positive": positive.tolist(), "ts_ms": ts,
            })
            positives[u].extend(items[positive].tolist())
            sid += 1
    list_i8 = pl.List(pl.Int8)
    schema = {
        "session": pl.Int64, "user": pl.Int32, "ts_ms": pl.Int64, "items": pl.List(pl.Int32), "click": list_i8,
        "watch_ms": pl.List(pl.Int64), "duration_ms": pl.List(pl.Int64), "long_view": list_i8, "like": list_i8,
        "follow": list_i8, "comment": list_i8, "share": list_i8, "positive": pl.List(pl.Boolean),
        "n_positive": pl.Int32, "watch_ms_total": pl.Int64, "high_quality": pl.Boolean, "split": pl.String,
    }
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(sessions, schema=schema).write_parquet(out / "sessions.parquet")
    pl.DataFrame(samples, schema={
        "sample": pl.Int64, "user": pl.Int32, "session": pl.Int64, "split": pl.String,
        "history": pl.List(pl.Int32), "history_ts": pl.List(pl.Int64), "target": pl.List(pl.Int32),
        "target_positive": pl.List(pl.Boolean), "ts_ms": pl.Int64,
    }).write_parquet(out / "samples.parquet")
    pl.DataFrame({
        "item": np.arange(n_items, dtype=np.int32), "item_orig": [str(i + 1000) for i in range(n_items)],
        "category": category, "tags": [[int(c), int(c) + 10] for c in category],
        "duration_ms": duration.astype(np.int64), "score": item_z[:, 0].astype(np.float32),
    }).write_parquet(out / "items.parquet")
    pl.DataFrame({
        "user": np.arange(n_users, dtype=np.int32), "user_orig": [str(u) for u in range(n_users)],
        "activity": rng.choice(["high", "low"], size=n_users),
    }).write_parquet(out / "users.parquet")
    return out


def tiny_config(**overrides: object) -> RewardConfig:
    """A model small enough to train in a second or two on 2 cores."""
    base = dict(d_model=16, n_heads=2, n_layers=1, epochs=4, batch_size=64, lr=5e-3, max_session_len=8,
                max_history=20, feature_buckets=32, dropout=0.0)
    base.update(overrides)
    return RewardConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def reward_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reward_data(tmp_path_factory.mktemp("reward_data") / "data")


def random_model(config: RewardConfig | None = None, n_items: int = 30, n_users: int = 6, seed: int = 0,
                 unseen: tuple[int, ...] = ()):
    """An untrained, seeded RewardModel over a random catalogue; items in ``unseen`` have no id embedding."""
    import torch

    from onerec.reward.model import RewardModel

    config = config or tiny_config()
    rng = np.random.default_rng(seed)
    known = np.ones(n_items, bool)
    known[list(unseen)] = False
    catalog = {
        "item_idx": rng.integers(0, 40, size=(n_items, 2)), "item_num": rng.normal(size=(n_items, 1)).astype(np.float32),
        "content": rng.normal(size=(n_items, 4)).astype(np.float32), "item_known": known,
        "user_idx": rng.integers(0, 10, size=(n_users, 1)), "user_num": np.zeros((n_users, 0), np.float32),
    }
    meta = {"item_vocab": 40, "user_vocab": 10, "thresholds": {}}
    model = RewardModel(config, list(config.towers), catalog, meta)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.eval()
