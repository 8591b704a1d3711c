"""Shared simulator fixtures: a tiny world on disk (built once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.simulate.config import SimulateConfig


def tiny_config(**overrides) -> SimulateConfig:
    base = {"users": 300, "items": 200, "days": 2, "seed": 3, "calibration_requests": 2000}
    base.update(overrides)
    return SimulateConfig(**base)


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onerec.simulate.writer import generate

    out = tmp_path_factory.mktemp("sim") / "world"
    generate(tiny_config(), out)
    return out


@pytest.fixture(scope="session")
def calibration_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A world big enough (~250k impressions) for the rare rates (share 0.0009) to be measured within 20 %."""
    from onerec.simulate.writer import generate

    out = tmp_path_factory.mktemp("sim") / "calib"
    generate(SimulateConfig(users=4000, items=2000, days=14, seed=11), out)
    return out
