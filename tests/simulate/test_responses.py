"""Ground-truth math: normal CDF, capped log-normal mean, session context, calibration."""

from __future__ import annotations

import math

import numpy as np

from onerec.simulate.config import SimulateConfig
from onerec.simulate.responses import (
    calibrate,
    capped_lognormal_mean,
    item_expectations,
    normal_cdf,
    session_context,
)


def test_normal_cdf_matches_erf() -> None:
    """normal_cdf agrees with math.erf to 1e-6 over [-8, 8]."""
    x = np.linspace(-8, 8, 401)
    ref = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    err = np.abs(normal_cdf(x) - ref).max()
    assert err < 1e-6, f"max |cdf - erf cdf| = {err:.2e}"


def test_capped_lognormal_mean_matches_monte_carlo() -> None:
    """E[min(X, cap)] in closed form equals the mean of 2M draws within 4 standard errors."""
    rng = np.random.default_rng(0)
    mu, sigma, cap = 0.3, 0.9, 2.5
    draws = np.minimum(np.exp(mu + sigma * rng.standard_normal(2_000_000)), cap)
    exact = float(capped_lognormal_mean(np.array(mu), sigma, np.array(cap)))
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * se, f"exact {exact:.5f} vs MC {draws.mean():.5f} (se {se:.5f})"


def test_session_context_worked_example() -> None:
    """Context of tags [1,1,2,1], authors [7,8,7,9] equals the hand-worked decay/fatigue/novelty sums."""
    cfg = SimulateConfig(position_decay=0.1, tag_fatigue=0.3, author_fatigue=0.5, novelty_bonus=0.2)
    ctx = session_context(np.array([[1, 1, 2, 1]]), np.array([[7, 8, 7, 9]]), cfg)[0]
    # pos0: 0; pos1: -0.1 - 0.3 (tag 1 once); pos2: -0.2 - 0.5 (author 7) + 0.2 (tag 2 new); pos3: -0.3 - 0.6
    expected = np.array([0.0, -0.4, -0.5, -0.9])
    np.testing.assert_allclose(ctx, expected, atol=1e-6, err_msg="session context differs from the hand sums")


def test_calibration_hits_targets() -> None:
    """Calibrated intercepts make the mean expected rates equal the targets (within 0.5 % relative)."""
    cfg = SimulateConfig()
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.5, size=50_000)
    dur = np.exp(rng.normal(np.log(60_000), 1.0, size=50_000))
    icpt = calibrate(x, dur, cfg)
    rates = {k: float(v.mean()) for k, v in item_expectations(x, dur, icpt, cfg).items()}
    targets = {"click": cfg.target_click, "long_view": cfg.target_long_view, "like": cfg.target_like,
               "follow": cfg.target_follow, "comment": cfg.target_comment, "share": cfg.target_share,
               "hate": cfg.target_hate}
    for key, target in targets.items():
        assert abs(rates[key] / target - 1) < 0.005, f"{key}: {rates[key]:.5f} vs target {target:.5f}"
