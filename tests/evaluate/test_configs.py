"""The evaluation configs shipped in configs/ load into their dataclasses and open with their commands."""

from __future__ import annotations

from pathlib import Path

from onerec.config import load_section
from onerec.evaluate import EvalConfig
from onerec.model.onerec import ModelConfig
from onerec.tokenizer import TokenizerConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_tiger_config_is_item_wise_dense_rqvae() -> None:
    """configs/tiger_toys.toml is an RQ-VAE tokenizer, a dense decoder, one item per target, beam >= 10."""
    path = CONFIGS / "tiger_toys.toml"
    tok = load_section(TokenizerConfig, "tokenizer", path)
    model = load_section(ModelConfig, "model", path)
    ev = load_section(EvalConfig, "eval", path)
    assert tok.method == "rqvae", f"tokenizer method {tok.method}"
    assert model.ffn == "dense" and model.max_session_items == 1, f"ffn {model.ffn}, m {model.max_session_items}"
    assert ev.beam_size >= 10 and ev.history_len("loo") == model.max_history, "beam < K or history lengths differ"
    assert path.read_text().startswith("# TIGER-style"), "the config must open with what it is and its commands"
