"""Every shipped config file loads: each table into its stage's dataclass, with no unknown key."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.config import load_section, read_toml

REPO = Path(__file__).resolve().parents[1]


def _sections() -> dict[str, type]:
    from onerec.align.dpo import AlignConfig
    from onerec.data import DataConfig
    from onerec.embed import EmbedConfig
    from onerec.evaluate import EvalConfig
    from onerec.evaluate.baselines.sasrec import SASRecConfig
    from onerec.model.onerec import ModelConfig
    from onerec.pipeline import PipelineConfig
    from onerec.reward import RewardConfig
    from onerec.serve.engine import ServeConfig
    from onerec.simulate.config import SimulateConfig
    from onerec.tokenizer import TokenizerConfig
    from onerec.train import TrainConfig

    return {"align": AlignConfig, "data": DataConfig, "embed": EmbedConfig, "eval": EvalConfig,
            "sasrec": SASRecConfig, "model": ModelConfig, "pipeline": PipelineConfig, "reward": RewardConfig,
            "serve": ServeConfig, "simulate": SimulateConfig, "tokenizer": TokenizerConfig, "train": TrainConfig}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_config_file_loads(path: Path) -> None:
    """Each table of the file is a known stage and loads into that stage's dataclass."""
    sections = _sections()
    raw = read_toml(path)
    assert raw, f"{path.name} is empty"
    assert path.read_text().lstrip().startswith("#"), f"{path.name} must open with a comment giving its command"
    for name in raw:
        assert name in sections, f"{path.name}: unknown table [{name}]"
        load_section(sections[name], name, path)
