"""Helpers of the model tests: the tiny config, small catalogues, their semantic IDs and tries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onerec.config import load_section
from onerec.model.onerec import ModelConfig, OneRec
from onerec.tokenizer.codec import SemanticIds
from onerec.tokenizer.trie import CodeTrie

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(**overrides) -> ModelConfig:
    """configs/tiny.toml's [model] table with keyword overrides."""
    base = load_section(ModelConfig, "model", CONFIGS / "tiny.toml")
    return ModelConfig(**{**base.__dict__, **overrides})


def random_ids(n_items: int, codebook: int, levels: int, seed: int) -> SemanticIds:
    """Random (colliding) level codes for ``n_items`` items, made one-to-one by the dedup level."""
    rng = np.random.default_rng(seed)
    return SemanticIds.from_levels(rng.integers(0, codebook, size=(n_items, levels)), codebook)


def catalogue(n_items: int = 40, codebook: int = 4, levels: int = 2, seed: int = 0):
    """(SemanticIds, CodeTrie) of a small random catalogue."""
    ids = random_ids(n_items, codebook, levels, seed)
    return ids, CodeTrie.from_codes(ids.codes, ids.level_sizes)


def tiny_model(ids: SemanticIds, **overrides) -> OneRec:
    return OneRec(tiny_config(**overrides), ids).eval()


def random_history(n_users: int, length: int, n_items: int, seed: int) -> torch.Tensor:
    """(B, n) item ids, left-padded with -1 by a random amount per row."""
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(0, n_items, (n_users, length), generator=g)
    pad = torch.randint(0, length, (n_users,), generator=g)
    return history.masked_fill(torch.arange(length)[None, :] < pad[:, None], -1)
