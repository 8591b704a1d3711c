"""A tiny data directory in the ARCHITECTURE.md §1 schema with *planted* co-engagement structure.

Items fall into hidden groups; each user engages only with items of one group, one a minute, so items of
a group are co-engaged and items of different groups never are. Item features (random tags, an author
shared by item pairs, a random duration) are unrelated to the groups, so only behaviour can reveal them.
Splits are leave-one-out (EVAL.md §1): per user, valid target = second-to-last item, test = last item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

SIGNALS_I8 = ("click", "long_view", "like", "follow", "comment", "share")


def make_data_dir(
    path: Path, n_groups: int = 6, group_size: int = 10, n_users: int = 180, seq_len: int = 8, seed: int = 0
) -> tuple[Path, np.ndarray]:
    """Write items/interactions/samples/sessions.parquet under ``path``; return (path, group of each item (I,))."""
    rng = np.random.default_rng(seed)
    n_items = n_groups * group_size
    group = rng.permutation(np.repeat(np.arange(n_groups), group_size))  # (I,) hidden group per item
    members = [np.flatnonzero(group == g) for g in range(n_groups)]
    items = pl.DataFrame(
        {
            "item": np.arange(n_items, dtype=np.int32),
            "item_orig": [f"v{i}" for i in range(n_items)],
            "tags": [sorted(rng.choice(40, size=3, replace=False).tolist()) for _ in range(n_items)],
            "author_id": (np.arange(n_items) // 2).astype(np.int64),
            "duration_ms": rng.integers(5_000, 300_000, size=n_items).astype(np.int64),
        },
        schema_overrides={"tags": pl.List(pl.Int32)},
    )
    rows, samples = [], []
    for user in range(n_users):
        seq = rng.choice(members[user % n_groups], size=seq_len, replace=False)
        ts = 1_650_000_000_000 + user * 10_000_000 + 60_000 * np.arange(seq_len)
        rows += [(user, int(i), int(t)) for i, t in zip(seq, ts)]
        for split, cut in (("train", seq_len - 3), ("valid", seq_len - 2), ("test", seq_len - 1)):
            samples.append({
                "sample": len(samples), "user": user, "session": -1, "split": split,
                "history": seq[:cut].tolist(), "history_ts": ts[:cut].tolist(),
                "target": [int(seq[cut])], "target_positive": [True], "ts_ms": int(ts[cut]),
            })
    users, item_col, ts_col = (np.array(c) for c in zip(*rows))
    n = len(users)
    interactions = pl.DataFrame({
        "user": users.astype(np.int32), "item": item_col.astype(np.int32), "ts_ms": ts_col.astype(np.int64),
        "request_id": np.full(n, -1, np.int64), "session": np.full(n, -1, np.int64),
        **{c: np.ones(n, np.int8) if c == "click" else np.zeros(n, np.int8) for c in SIGNALS_I8},
        "watch_ms": np.full(n, 30_000, np.int64), "duration_ms": np.full(n, 60_000, np.int64),
        "rating": pl.Series([None] * n, dtype=pl.Float32), "positive": np.ones(n, bool),
    })
    sample_frame = pl.DataFrame(samples, schema={
        "sample": pl.Int64, "user": pl.Int32, "session": pl.Int64, "split": pl.String,
        "history": pl.List(pl.Int32), "history_ts": pl.List(pl.Int64), "target": pl.List(pl.Int32),
        "target_positive": pl.List(pl.Boolean), "ts_ms": pl.Int64,
    })
    sessions = pl.DataFrame(schema={"session": pl.Int64, "user": pl.Int32, "ts_ms": pl.Int64,
                                    "items": pl.List(pl.Int32), "split": pl.String})
    path.mkdir(parents=True, exist_ok=True)
    items.write_parquet(path / "items.parquet")
    interactions.write_parquet(path / "interactions.parquet")
    sample_frame.write_parquet(path / "samples.parquet")
    sessions.write_parquet(path / "sessions.parquet")
    pl.DataFrame({"user": np.arange(n_users, dtype=np.int32), "user_orig": [f"u{u}" for u in range(n_users)]}).write_parquet(
        path / "users.parquet")
    return path, group
