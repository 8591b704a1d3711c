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


# the --set list of the Amazon OneRec runs in docs/results/quality.md ("The item head on Sports"), without the
# per-run seed, threads and progress settings
AMAZON_SETS = ["model.max_history=20", "model.d_model=128", "model.d_ff=512", "model.expert_d_ff=256",
               "train.max_steps=9000", "train.eval_every=1000", "train.warmup_steps=200", "train.lr=0.001",
               "model.dropout=0.3", 'train.select_metric="recall@10"', "train.select_samples=4096",
               "train.val_samples=4096", "train.patience=0", "model.item_head=true"]


def test_amazon_model_config_is_the_documented_recipe() -> None:
    """configs/amazon_model.toml = configs/small.toml with the documented overrides, table by table, so the
    shorter command trains the model the README's Amazon rows report."""
    from onerec.config import to_dict

    sections = _sections()
    for name in ("model", "train"):
        shipped = to_dict(load_section(sections[name], name, REPO / "configs" / "amazon_model.toml"))
        documented = to_dict(load_section(sections[name], name, REPO / "configs" / "small.toml",
                                          [s for s in AMAZON_SETS if s.startswith(name + ".")]))
        assert shipped == documented, {k: (shipped[k], documented[k]) for k in shipped if shipped[k] != documented[k]}


@pytest.mark.parametrize("name", ["amazon_toys.toml", "amazon_sports.toml"])
def test_amazon_data_configs_reproduce_the_measured_embeddings_and_model(name: str) -> None:
    """The Amazon tables' embeddings were made without the logQ correction; their pipeline trains
    amazon_model.toml and tunes the item head's weight on validation."""
    sections = _sections()
    embed = load_section(sections["embed"], "embed", REPO / "configs" / name)
    assert embed.logq_correction is False and embed.temperature == 0.07 and embed.knn_last_k == 5
    pipeline = load_section(sections["pipeline"], "pipeline", REPO / "configs" / name)
    assert pipeline.model_config == "configs/amazon_model.toml" and pipeline.tune_grid
