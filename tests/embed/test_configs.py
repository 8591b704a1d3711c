"""Every shipped config with an ``[embed]`` table loads into a valid EmbedConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.config import ConfigError, load_section, read_toml
from onerec.embed import EmbedConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))
WITH_EMBED = [p for p in CONFIGS if "embed" in read_toml(p)]


def test_some_config_has_an_embed_table() -> None:
    """At least the dataset configs carry an [embed] table."""
    names = {p.name for p in WITH_EMBED}
    assert {"amazon_toys.toml", "kuairand.toml"} <= names, f"[embed] tables found only in {sorted(names)}"


@pytest.mark.parametrize("path", WITH_EMBED, ids=lambda p: p.name)
def test_shipped_embed_table_loads(path: Path) -> None:
    """The [embed] table has only known keys of the right types and valid values."""
    cfg = load_section(EmbedConfig, "embed", path)
    assert cfg.dim >= 1, f"{path.name}: dim {cfg.dim}"


def test_bad_values_are_config_errors() -> None:
    """Out-of-range values name the key."""
    for override, key in (("embed.temperature=0", "temperature"), ("embed.window_items=0", "window_items"),
                          ("embed.eval_k=[]", "eval_k"), ("embed.batch_size=1", "batch_size")):
        with pytest.raises(ConfigError, match=key):
            load_section(EmbedConfig, "embed", None, [override])
