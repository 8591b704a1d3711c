"""One trained tiny embedding on the planted fixture, shared by the embedding tests (training once keeps them fast)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from onerec.embed import EmbedConfig
from tests.embed.planted import make_data_dir

TINY = dict(dim=16, hidden=32, epochs=12, batch_size=64, threads=1, min_count=2)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one thread is many times faster than two under contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """(data dir, hidden group of each item)."""
    return make_data_dir(tmp_path_factory.mktemp("planted") / "data")


@pytest.fixture(scope="session")
def trained(planted: tuple[Path, np.ndarray]) -> dict:
    """Aligned and content embeddings of the planted fixture, its features, pairs and popularity."""
    from onerec.embed.encoder import content_projection, train_aligned
    from onerec.embed.features import build_features
    from onerec.embed.pairs import co_engagement_pairs, item_popularity, train_positives

    import torch

    data, group = planted
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = EmbedConfig(**TINY)
    items = pl.read_parquet(data / "items.parquet")
    samples = pl.read_parquet(data / "samples.parquet")
    positives, _ = train_positives(pl.read_parquet(data / "interactions.parquet"), samples)
    features = build_features(items, cfg)
    pairs = co_engagement_pairs(positives, cfg.window_items, cfg.window_ms, cfg.max_pairs, cfg.seed)
    aligned, history = train_aligned(features, pairs, cfg)
    torch.set_num_threads(before)
    return {
        "cfg": cfg, "group": group, "samples": samples, "features": features, "pairs": pairs,
        "aligned": aligned, "history": history, "content": content_projection(features, cfg.dim, cfg.seed),
        "popularity": item_popularity(positives, items.height),
    }
