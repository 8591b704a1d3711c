"""Item embeddings: each item's own features, encoded and aligned with co-engagement (ONEREC.md §1).

``onerec embed --data DATA --out EMB`` writes ``EMB/embeddings.safetensors`` (tensor ``embeddings``,
float32 (I, d), row i = item i), ``EMB/embed.json`` and ``EMB/embed_metrics.json`` (ARCHITECTURE.md §3).

Methods (``embed.method``)
- ``aligned`` (default): a bag-of-features encoder (EmbeddingBag + small MLP) trained with InfoNCE on
  co-engagement pairs — items positively engaged by the same user close in time, from the training
  split only — with in-batch negatives.
- ``content``: no training. A fixed Gaussian random projection of the same sparse feature vector
  (IDF-weighted, each field a unit-norm block), so cosines between items approximate the cosines of
  their feature vectors (Johnson–Lindenstrauss). It is exactly the aligned encoder's EmbeddingBag at
  initialisation without the MLP: "content before alignment".
- ``external``: a user's embeddings (``--embeddings FILE``: .npy (I, d) or Parquet keyed by ``item`` or
  ``item_orig``), checked for missing ids, ragged or wrong dimensions and NaN/inf.

Modules: ``features`` (items.parquet -> sparse bags), ``pairs`` (training positives and co-engagement
pairs), ``encoder`` (the model, the loss, training, the random projection), ``knn`` (the check: a
nearest-neighbour next-item recommender vs popularity), ``external`` (reading a user's file), ``cli``
(the command). This file holds the config and the loader, so importing it stays cheap.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from onerec.config import ConfigError
from onerec.io import OnerecError, read_json


@dataclasses.dataclass
class EmbedConfig:
    """``[embed]`` table. Defaults suit the CPU-sized datasets here (≤ 20k items)."""

    method: Literal["aligned", "content", "external"] = "aligned"
    dim: int = 64
    seed: int = 0
    # --- features (items.parquet -> bag of tokens; see features.py) ---
    min_count: int = 2  # a token must occur in >= min_count items (rarer ones carry no shared signal)
    max_vocab: int = 200_000  # keep the most frequent tokens beyond this
    n_buckets: int = 10  # quantile buckets for numeric columns
    max_categories: int = 32  # integer/float columns with <= this many values are categorical
    text_columns: list[str] = dataclasses.field(default_factory=lambda: ["text", "title"])
    exclude_columns: list[str] = dataclasses.field(default_factory=list)
    field_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # column -> weight
    item_id_feature: bool = False  # add an own-id token per item (a hybrid id + content embedding)
    # --- co-engagement pairs (training split only) ---
    window_items: int = 3  # pair each positive with the user's next `window_items` positives ...
    window_ms: int = 0  # ... that come at most this long after it (0 = no time limit)
    include_histories: bool = True  # also train-sample histories (positives from before the log, KuaiRand)
    max_pairs: int = 2_000_000  # uniform subsample beyond this (seeded)
    # --- encoder and training ---
    hidden: int = 256
    epochs: int = 8
    batch_size: int = 512  # B² logits: 512 is ~3x cheaper per pair than 1024 on CPU, negatives enough
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 0.07
    logq_correction: bool = True  # subtract log(item frequency) from in-batch logits (keeps popularity)
    threads: int = 1  # small batches: on a busy 2-core machine one thread was ~15x faster than two
    progress: bool = True  # tqdm bar on stderr over the training batches (epoch, running loss)
    # --- external ---
    external_dim: int = 0  # 0: accept the file's dimension; otherwise it must match
    # --- the check (kNN next-item recommender vs popularity) ---
    eval: bool = True
    eval_split: Literal["valid", "test"] = "test"
    knn_last_k: int = 5  # query = mean of the last k history items
    eval_k: list[int] = dataclasses.field(default_factory=lambda: [10, 50])

    def __post_init__(self) -> None:
        positive = ("dim", "min_count", "max_vocab", "n_buckets", "window_items", "max_pairs", "hidden",
                    "epochs", "batch_size", "threads", "knn_last_k")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"embed.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("window_ms", "max_categories", "external_dim"):
            if getattr(self, name) < 0:
                raise ConfigError(f"embed.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError(f"embed.batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"embed.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"embed.weight_decay must be >= 0, got {self.weight_decay}")
        if not self.temperature > 0:
            raise ConfigError(f"embed.temperature must be > 0, got {self.temperature}")
        if not self.eval_k or any(k < 1 for k in self.eval_k):
            raise ConfigError(f"embed.eval_k must be a non-empty list of ints >= 1, got {self.eval_k}")
        bad = {k: w for k, w in self.field_weights.items() if not w >= 0}
        if bad:
            name = next(iter(bad))
            raise ConfigError(f"embed.field_weights.{name} must be >= 0, got {bad[name]}")


def load_embeddings(path: str | Path) -> np.ndarray:
    """``EMB/embeddings.safetensors`` as float32 (I, d); row i = item i. Checked against ``embed.json``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    file = path / "embeddings.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise OnerecError(f"missing file: {file}")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise OnerecError(f"{file}: cannot read ({err})") from None
    if "embeddings" not in tensors:
        raise OnerecError(f"{file}: no tensor 'embeddings' (has {sorted(tensors)})")
    emb = tensors["embeddings"]
    if emb.ndim != 2 or emb.dtype != np.float32:
        raise OnerecError(f"{file}: 'embeddings' must be float32 (I, d), got {emb.dtype} {emb.shape}")
    bad = int((~np.isfinite(emb)).any(axis=1).sum())
    if bad:
        raise OnerecError(f"{file}: {bad} rows of 'embeddings' hold NaN or inf")
    meta_path = file.parent / "embed.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        if (meta.get("n_items"), meta.get("dim")) != emb.shape:
            raise OnerecError(
                f"{file}: shape {emb.shape} disagrees with {meta_path} (n_items={meta.get('n_items')}, "
                f"dim={meta.get('dim')})"
            )
    return emb


__all__ = ["EmbedConfig", "load_embeddings"]
