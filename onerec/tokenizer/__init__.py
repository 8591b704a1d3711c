"""Semantic IDs: residual quantisation of item embeddings into L tokens of K codes (+1 dedup token).

Modules: ``balanced`` (residual balanced K-means, the OneRec method: the paper's Algorithm 1 as a
reference and a fast capacity-constrained assignment), ``kmeans`` (plain residual k-means, faiss),
``rqvae`` (RQ-VAE, the TIGER tokenizer), ``codec`` (``SemanticIds``: item <-> code), ``trie``
(``CodeTrie`` for constrained decoding), ``metrics`` (per-level usage and balance), ``cli``
(``onerec tokenize``). This file holds only the stage config, so importing it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from onerec.config import ConfigError


@dataclass
class TokenizerConfig:
    """``[tokenizer]`` table. Defaults suit CPU runs (K = 256); the paper used K = 8192, L = 3."""

    method: Literal["balanced", "kmeans", "rqvae"] = "balanced"
    levels: int = 3
    codebook_size: int = 256
    seed: int = 0
    # balanced K-means
    balanced_algorithm: Literal["greedy", "paper"] = "greedy"  # greedy: fast, vectorised; paper: Algorithm 1
    iters: int = 10  # centroid-update / assignment rounds per level (k-means and balanced)
    candidates: int = 16  # nearest clusters per item considered by the greedy assignment
    refine_rounds: int = 1  # exchange (pairwise swap) rounds after each greedy assignment
    price_rounds: int = 20  # auction price-ascent rounds before each greedy assignment
    train_points_per_centroid: int = 256  # Lloyd rounds run on at most this many items per cluster
    normalize: bool = False  # L2-normalise embeddings before quantising
    # RQ-VAE
    rqvae_latent_dim: int = 32
    rqvae_hidden: int = 256
    rqvae_epochs: int = 30
    rqvae_batch_size: int = 1024
    rqvae_lr: float = 1e-3
    rqvae_beta: float = 0.25  # commitment weight (VQ-VAE eq. 3)
    # TIGER's published recipe: hidden_dims [512, 256, 128], optimizer "adagrad", lr 0.4, init "batch"
    rqvae_hidden_dims: list[int] = field(default_factory=list)  # empty: two layers of rqvae_hidden
    rqvae_optimizer: Literal["adam", "adagrad"] = "adam"
    rqvae_init: Literal["all", "batch"] = "all"  # k-means init on every item's latent or on the first batch

    def __post_init__(self) -> None:
        for name in ("levels", "codebook_size", "iters", "candidates", "rqvae_latent_dim",
                     "rqvae_hidden", "rqvae_epochs", "rqvae_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tokenizer.{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ConfigError(f"tokenizer.codebook_size must be >= 2, got {self.codebook_size}")
        for name in ("refine_rounds", "price_rounds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tokenizer.{name} must be >= 0, got {getattr(self, name)}")
        if self.train_points_per_centroid < 1:
            raise ConfigError("tokenizer.train_points_per_centroid must be >= 1")
        if any(h < 1 for h in self.rqvae_hidden_dims):
            raise ConfigError(f"tokenizer.rqvae_hidden_dims must be positive widths, got {self.rqvae_hidden_dims}")
        if self.rqvae_lr <= 0 or self.rqvae_beta < 0:
            raise ConfigError("tokenizer.rqvae_lr must be > 0 and tokenizer.rqvae_beta >= 0")


__all__ = ["TokenizerConfig"]
