"""Synthetic catalogue and users: shapes taken from the real KuaiRand-Pure tables."""

from __future__ import annotations

import numpy as np

from onerec.simulate.config import SimulateConfig
from onerec.simulate.features import (
    DURATION_QUANTILES_MS,
    sample_durations,
    synthetic_catalogue,
    synthetic_population,
)


def test_durations_follow_real_percentiles() -> None:
    """Sampled durations reproduce the real 10th/50th/90th percentiles within 5 %."""
    d = sample_durations(np.random.default_rng(0), 200_000)
    for q, real in ((10, DURATION_QUANTILES_MS[4]), (50, DURATION_QUANTILES_MS[8]), (90, DURATION_QUANTILES_MS[12])):
        got = np.percentile(d, q)
        assert abs(got / real - 1) < 0.05, f"p{q}: {got:.0f} vs real {real:.0f}"


def test_catalogue_shapes() -> None:
    """Authors own several videos (some many), every video has a primary tag, ~24 % have a second."""
    cfg = SimulateConfig(items=5000)
    cat = synthetic_catalogue(cfg, np.random.default_rng(0))
    _, sizes = np.unique(cat.author_ids, return_counts=True)
    assert sizes.mean() > 2.5 and sizes.max() >= 20, f"author sizes mean {sizes.mean():.1f} max {sizes.max()}"
    assert (cat.tags[:, 0] >= 0).all(), "a video without a primary tag"
    second = float((cat.tags[:, 1] >= 0).mean())
    assert 0.15 < second < 0.3, f"share with a second tag {second:.2f}"
    assert cat.features["video_id"].to_list() == list(range(5000)), "video ids are not 0..I-1"


def test_population_reveals_top_tag() -> None:
    """onehot_feat1 carries the user's top tag (mod its cardinality): a cold-start signal."""
    cfg = SimulateConfig(users=1000)
    top = np.random.default_rng(1).integers(0, 46, size=1000)
    pop = synthetic_population(cfg, np.random.default_rng(0), top_tag=top)
    assert (pop.features["onehot_feat1"].to_numpy() == top % 7).all(), "onehot_feat1 != top tag mod 7"
    assert pop.features.height == 1000 and pop.activity.min() > 0, pop.activity.min()
