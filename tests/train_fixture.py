"""A tiny generated data directory + tokenizer for training tests and ``make train-ddp``.

The targets are learnable: a sample's session is the ``m`` items that follow its last history item in a
fixed item cycle, so a model that trains at all lowers its loss.
Run as a script: ``python tests/train_fixture.py OUT`` writes ``OUT/data`` and ``OUT/tok``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

TINY_TOML = """
[model]
d_model = 32
n_heads = 2
encoder_layers = 1
decoder_layers = 2
d_ff = 64
n_experts = 4
top_k = 2
expert_d_ff = 32
max_history = 8
max_session_items = 3

[train]
batch_size = 8
micro_batch_size = 4
epochs = 2
lr = 0.005
warmup_steps = 2
eval_every = 3
log_every = 1
progress = false
"""


def make_fixture(out: Path, n_items: int = 24, n_train: int = 48, n_valid: int = 8, m: int = 3,
                 seed: int = 0) -> tuple[Path, Path]:
    """Write ``out/data`` (samples/sessions/items parquet) and ``out/tok`` (SemanticIds); return both paths."""
    from onerec.tokenizer.codec import SemanticIds

    rng = np.random.default_rng(seed)
    out = Path(out)
    data, tok = out / "data", out / "tok"
    data.mkdir(parents=True, exist_ok=True)
    levels = rng.integers(0, 4, size=(n_items, 2))
    SemanticIds.from_levels(levels, 4).save(tok, {"method": "fixture"})
    cycle = rng.permutation(n_items)
    where = np.argsort(cycle)
    rows = []
    for s in range(n_train + n_valid):
        n_hist = int(rng.integers(1, 10))
        start = int(rng.integers(0, n_items))
        history = [int(cycle[(start + k) % n_items]) for k in range(n_hist)]
        nxt = where[history[-1]] + 1
        target = [int(cycle[(nxt + k) % n_items]) for k in range(m)]
        rows.append({
            "sample": s, "user": s % 7, "session": s, "split": "train" if s < n_train else "valid",
            "history": history, "history_ts": [1_000 * (k + 1) for k in range(n_hist)], "target": target,
            "target_positive": [True] * m, "ts_ms": 10_000 + s,
        })
    schema = {"sample": pl.Int64, "user": pl.Int32, "session": pl.Int64, "split": pl.String,
              "history": pl.List(pl.Int32), "history_ts": pl.List(pl.Int64), "target": pl.List(pl.Int32),
              "target_positive": pl.List(pl.Boolean), "ts_ms": pl.Int64}
    pl.DataFrame(rows, schema=schema).write_parquet(data / "samples.parquet")
    pl.DataFrame({"session": np.arange(n_train + n_valid, dtype=np.int64),
                  "high_quality": np.ones(n_train + n_valid, dtype=bool)}).write_parquet(data / "sessions.parquet")
    pl.DataFrame({"item": np.arange(n_items, dtype=np.int32),
                  "item_orig": [f"i{i}" for i in range(n_items)]}).write_parquet(data / "items.parquet")
    return data, tok


def write_config(path: Path, extra: str = "") -> Path:
    path = Path(path)
    path.write_text(TINY_TOML + extra)
    return path


if __name__ == "__main__":
    root = Path(sys.argv[1])
    make_fixture(root)
    write_config(root / "tiny_train.toml")
    print(root)
