"""Bootstrap intervals and paired comparisons (onerec.evaluate.compare) have the properties they claim."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.evaluate.compare import fingerprint, mean_ci, paired
from onerec.evaluate.protocols import NextItemSet, NextSessionSet
from onerec.io import OnerecError


def test_interval_is_seeded_holds_the_mean_and_narrows_like_one_over_sqrt_n():
    rng = np.random.default_rng(0)
    small = (rng.random(400) < 0.1).astype(float)
    large = (rng.random(16 * 400) < 0.1).astype(float)
    assert mean_ci(small, 500, 3) == mean_ci(small, 500, 3), "the same seed must give the same interval"
    lo, hi = mean_ci(small, 500, 3)
    assert lo <= small.mean() <= hi, f"interval [{lo}, {hi}] misses the mean {small.mean()}"
    lo4, hi4 = mean_ci(large, 500, 3)
    ratio = (hi - lo) / (hi4 - lo4)
    assert 2.8 < ratio < 5.5, f"16x the samples should narrow the interval ~4x, got {ratio:.2f}x"
    assert all(np.isnan(mean_ci(np.array([np.nan, np.nan])))), "no defined value -> no interval"


def test_paired_identical_values_differ_by_exactly_zero():
    a = (np.random.default_rng(2).random(300) < 0.2).astype(float)
    r = paired(a, a.copy(), n_boot=200)
    assert r["diff"] == 0 and r["ci"] == [0.0, 0.0] and r["p_value"] == 1.0, r


def test_paired_detects_a_real_shift_and_states_it_relative_to_a():
    rng = np.random.default_rng(4)
    a = (rng.random(5000) < 0.10).astype(float)
    b = np.maximum(a, (rng.random(5000) < 0.03).astype(float))  # b wins ~2.7 points more often, never loses
    r = paired(a, b, n_boot=500, seed=0)
    assert r["ci"][0] > 0 and r["p_value"] < 1e-6, f"a real gain was not detected: {r}"
    assert r["rel"] == pytest.approx(r["diff"] / a.mean()), r
    with pytest.raises(OnerecError, match="not the same samples"):
        paired(a, b[:-1])


def test_paired_interval_covers_a_zero_difference_about_95_percent_of_the_time():
    """Calibration: two exchangeable models (no true difference) -> the 95 % interval holds 0 in ~95 % of trials."""
    rng = np.random.default_rng(5)
    covered = 0
    trials = 200
    for t in range(trials):
        hit = rng.random(600) < 0.15
        a = hit * (rng.random(600) < 0.7)  # both catch a random 70 % of the same easy samples
        b = hit * (rng.random(600) < 0.7)
        lo, hi = paired(a.astype(float), b.astype(float), n_boot=300, seed=t)["ci"]
        covered += lo <= 0.0 <= hi
    assert 0.89 <= covered / trials <= 0.99, f"coverage {covered / trials:.2f}, expected ~0.95"


def test_fingerprint_tells_sample_sets_apart():
    hist = np.array([[1, 2, -1], [3, -1, -1]])
    loo = NextItemSet(hist, np.array([4, 5]))
    assert fingerprint(loo) == fingerprint(NextItemSet(hist.copy(), np.array([4, 5])))
    assert fingerprint(loo) != fingerprint(NextItemSet(hist, np.array([4, 6])))
    s1 = NextSessionSet(hist, [np.array([1, 2]), np.array([3])])
    s2 = NextSessionSet(hist, [np.array([1]), np.array([2, 3])])  # same items, other split into sessions
    assert fingerprint(s1) != fingerprint(s2)
