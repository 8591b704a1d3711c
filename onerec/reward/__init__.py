"""Session-wise reward model R(u, S) (ONEREC.md §5): config here, model in ``model``, training in ``train``.

Design choices
- ``RewardConfig`` is the one dataclass of this stage (TOML table ``[reward]``); ``RewardModel`` is imported
  lazily (PEP 562) so that ``onerec --help`` and the CLI registration never import torch.
- Towers are named like the simulator's keys: ``swt`` (session watch time), ``vtr`` (long view), ``wtr``
  (follow), ``ltr`` (like), ``cmtr`` (comment), ``shtr`` (share), ``ctr`` (click). Each reads one per-item
  signal column of ``sessions.parquet`` (``TOWER_SIGNAL``).
- ``random_sessions``: random-exposure sessions (``sessions_random.parquet``: uniformly random items) show
  the model what users do with items the logging policy never picks, i.e. with sessions like the ones
  the aligned model invents; only their training-split sessions are read, so evaluation is unchanged.
- A tower whose signal is null for every training session (the source lacks it) is dropped and listed in
  ``reward.json`` (``missing_towers = "drop"``), or is an error (``"error"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from onerec.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from onerec.reward.model import RewardModel

# tower -> per-item signal column of sessions.parquet
TOWER_SIGNAL: dict[str, str] = {
    "swt": "watch_ms",
    "vtr": "long_view",
    "wtr": "follow",
    "ltr": "like",
    "cmtr": "comment",
    "shtr": "share",
    "ctr": "click",
}


def _default_towers() -> list[str]:
    return ["swt", "vtr", "wtr", "ltr", "cmtr", "shtr"]


def _default_weights() -> dict[str, float]:
    return {"swt": 1.0, "vtr": 1.0, "wtr": 1.0, "ltr": 1.0, "cmtr": 0.5, "shtr": 0.5, "ctr": 0.0}


@dataclass
class RewardConfig:
    """Reward model: labels, architecture, training. Defaults are a CPU-sized model."""

    towers: list[str] = field(default_factory=_default_towers)
    # combined reward = sum_t weights[t] * p_t over the trained towers (a tower missing here weighs 0)
    weights: dict[str, float] = field(default_factory=_default_weights)
    # swt label: "quantile" -> total watch > the train quantile; "seconds" -> total watch > swt_seconds;
    # "ratio" -> soft label clip(sum watch / sum duration, 0, 1) (binarised at its train median for AUC)
    swt_mode: Literal["quantile", "seconds", "ratio"] = "quantile"
    swt_quantile: float = 0.5
    swt_seconds: float = 60.0
    # session label of a 0/1 signal: "mean" = the session's rate (soft BCE target), "any" = max over items
    session_target: Literal["mean", "any"] = "mean"
    missing_towers: Literal["drop", "error"] = "drop"
    # architecture
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 1
    attention: bool = True  # False = the pointwise baseline (same features, no self-attention in the session)
    position: bool = False  # learned position embedding inside the session (breaks permutation invariance)
    # what the session attention's queries and keys read: "target" = e_i = v_i * u (values too), "item" = v_i,
    # the item alone, so which items attend to which (same tag, same author) does not depend on the user;
    # the values stay target-aware either way
    attention_keys: Literal["target", "item"] = "target"
    # session match counts: for each item and each categorical feature slot (author, primary tag, music ...),
    # log1p(how many *other* items of the session share its value), projected and added to e_i — what fatigue
    # and diversity effects depend on; order free. The pointwise baseline never gets them.
    match_features: bool = False
    max_history: int = 50
    max_session_len: int = 10
    feature_buckets: int = 512  # hashed buckets per categorical feature column
    max_categories: int = 64  # a numeric column with at most this many distinct values is categorical
    id_dropout: float = 0.1  # share of training items whose id embedding is replaced by the fallback row
    min_item_count: int = 1  # items seen fewer times in training sessions/histories use the fallback id
    user_feature_dropout: float = 0.1
    dropout: float = 0.1
    # training
    item_loss_weight: float = 0.5
    epochs: int = 6
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    # also train on the train_splits sessions of sessions_random.parquet (random exposure) when the data has it
    random_sessions: bool = True
    valid_split: str = "valid"
    test_split: str = "test"
    seed: int = 0
    threads: int = 1  # 1 is fastest for this small model on a shared 2-core machine
    progress: bool = True  # tqdm bar on stderr (rank 0) over the training batches (epoch, running loss, valid loss)
    # parallelism (onerec.reward.parallel): > 0, or under torchrun, trains with the world-size-free loop
    micro_batch_size: int = 0  # sessions per forward on one rank; 0 = batch_size / world size
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2)
    device: Literal["cpu", "auto", "cuda"] = "cpu"  # cuda/auto: GPU when there is one (NCCL under torchrun)

    def __post_init__(self) -> None:
        if not self.towers:
            raise ConfigError("reward.towers is empty")
        unknown = sorted(set(self.towers) - set(TOWER_SIGNAL))
        if unknown:
            raise ConfigError(f"reward.towers: unknown tower {unknown[0]!r} (known: {', '.join(TOWER_SIGNAL)})")
        if len(set(self.towers)) != len(self.towers):
            raise ConfigError(f"reward.towers: duplicate tower in {self.towers}")
        bad = sorted(set(self.weights) - set(TOWER_SIGNAL))
        if bad:
            raise ConfigError(f"reward.weights: unknown tower {bad[0]!r}")
        if not 0.0 < self.swt_quantile < 1.0:
            raise ConfigError(f"reward.swt_quantile must be in (0, 1), got {self.swt_quantile}")
        if self.swt_seconds <= 0:
            raise ConfigError(f"reward.swt_seconds must be > 0, got {self.swt_seconds}")
        for name in ("d_model", "n_heads", "max_history", "max_session_len", "feature_buckets", "epochs",
                     "batch_size", "threads", "max_categories"):
            if getattr(self, name) < 1:
                raise ConfigError(f"reward.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ConfigError(f"reward.n_layers must be >= 0, got {self.n_layers}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"reward.d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        for name in ("id_dropout", "user_feature_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"reward.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.item_loss_weight < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("reward.item_loss_weight, lr, weight_decay must be >= 0 (lr > 0)")
        if self.min_item_count < 0:
            raise ConfigError(f"reward.min_item_count must be >= 0, got {self.min_item_count}")
        if not self.train_splits:
            raise ConfigError("reward.train_splits is empty")
        if self.micro_batch_size < 0 or self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"reward.micro_batch_size={self.micro_batch_size} must be >= 0 and divide "
                              f"reward.batch_size={self.batch_size}")


def __getattr__(name: str) -> Any:
    if name == "RewardModel":
        from onerec.reward.model import RewardModel

        return RewardModel
    raise AttributeError(f"module 'onerec.reward' has no attribute {name!r}")


__all__ = ["TOWER_SIGNAL", "RewardConfig", "RewardModel"]
