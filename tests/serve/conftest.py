"""A tiny trained-shape run directory for the serving tests (random weights: serving does not care)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

N_ITEMS = 60


def tiny_codes(n_items: int = N_ITEMS, k: int = 4) -> tuple[np.ndarray, list[int]]:
    """(I, 3) codes: two levels of k codes and a dedup token, unique per item."""
    rng = np.random.default_rng(0)
    c0 = rng.integers(0, k, n_items)
    c1 = rng.integers(0, k, n_items)
    keys = c0 * k + c1
    dedup = np.zeros(n_items, dtype=np.int64)
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        dedup[idx] = np.arange(idx.size)
    codes = np.stack([c0, c1, dedup], 1).astype(np.int64)
    return codes, [k, k, int(dedup.max()) + 1]


def write_run(run: Path, seed: int, **model_options: object) -> str:
    """Write RUN/model.safetensors + run.json + items.parquet for a tiny model; returns the weights sha."""
    from types import SimpleNamespace

    from onerec import checkpoint as ckpt
    from onerec.config import to_dict
    from onerec.model.onerec import ModelConfig, OneRec

    codes, sizes = tiny_codes()
    cfg = ModelConfig(d_model=32, n_heads=2, encoder_layers=1, decoder_layers=1, d_ff=64, n_experts=4,
                      top_k=2, expert_d_ff=32, max_history=20, max_session_items=12, seed=seed, **model_options)
    model = OneRec(cfg, SimpleNamespace(codes=codes, level_sizes=sizes))
    run.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item": np.arange(N_ITEMS, dtype=np.int32),
                  "item_orig": [f"v{i}" for i in range(N_ITEMS)]}).write_parquet(run / "items.parquet")
    sha = ckpt.save_weights(model.state_dict(), run / ckpt.WEIGHTS)
    ckpt.write_run_info(run, {"model_config": to_dict(cfg), "level_sizes": sizes, "n_items": N_ITEMS,
                              "weights_sha256": sha, "version": f"seed{seed}"})
    return sha


@pytest.fixture()
def tiny_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_run(run, seed=0)
    return run
