"""SimulateConfig validation and the shipped [simulate] table."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.config import ConfigError, load_section
from onerec.simulate.config import SimulateConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key,value", [("users", 0), ("items", -1), ("days", 0), ("min_items", 0),
                                       ("target_click", 1.5), ("start_date", "25/04/2022"),
                                       ("random_share", 1.5)])
def test_bad_values_rejected(key: str, value: object) -> None:
    """Non-positive sizes, rates outside (0, 1) and bad dates raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=key):
        SimulateConfig(**{key: value})


def test_demo_config_loads() -> None:
    """configs/demo.toml has a valid [simulate] table and opens with the command that runs it."""
    path = REPO / "configs" / "demo.toml"
    cfg = load_section(SimulateConfig, "simulate", path)
    assert cfg.users > 0 and cfg.items > 0, cfg
    assert "onerec pipeline --config configs/demo.toml --out runs/demo" in path.read_text().splitlines()[0], \
        path.read_text()[:80]
