"""DataConfig: TOML/overrides load into it; unknown keys, wrong types and bad values are ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.config import ConfigError, load_section
from onerec.data import DataConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["kuairand", "amazon_toys", "amazon_sports", "movielens"])
def test_shipped_configs_load(name: str) -> None:
    """Every shipped data config loads and names its source's adapter."""
    cfg = load_section(DataConfig, "data", REPO / "configs" / f"{name}.toml")
    assert cfg.source in name, f"configs/{name}.toml has source {cfg.source}"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.no_such_key=1", "unknown config key data.no_such_key"),
        ("data.session_gap_s=\"long\"", "data.session_gap_s"),
        ("data.max_history=0", "data.max_history"),
        ("data.hq_explicit=[\"dislike\"]", "data.hq_explicit"),
        ("data.timezone=\"Mars/Olympus\"", "data.timezone"),
        ("data.test_start=\"2022-13-01\"", "data.test_start"),
        ("data.positive_watch=\"maybe\"", "data.positive_watch"),
    ],
)
def test_bad_values_are_config_errors(override: str, fragment: str) -> None:
    """A bad key, type or value is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as err:
        load_section(DataConfig, "data", None, [override])
    assert fragment in str(err.value), f"{override!r} gave {err.value!r}"


def test_cutoffs_must_be_ordered() -> None:
    """valid_start after test_start is rejected."""
    with pytest.raises(ConfigError, match="cut-offs"):
        DataConfig(valid_start="2022-05-07", test_start="2022-05-06")


def test_cutoff_uses_timezone() -> None:
    """A date without an offset is midnight in data.timezone (Beijing is 8 h ahead of UTC)."""
    utc = DataConfig(test_start="2022-05-06").cutoff_ms("test_start")
    bj = DataConfig(test_start="2022-05-06", timezone="Asia/Shanghai").cutoff_ms("test_start")
    assert utc - bj == 8 * 3600 * 1000, f"utc {utc} vs beijing {bj}"
