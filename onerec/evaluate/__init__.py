"""Evaluation: metrics, the leave-one-out and next-session harnesses, and baselines run by the same code.

``EvalConfig`` is the ``[eval]`` table shared by ``onerec evaluate`` and ``onerec baseline``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from onerec.config import ConfigError


@dataclasses.dataclass
class EvalConfig:
    """``[eval]`` table: which protocol, split and sizes every model of one comparison is scored with."""

    protocol: Literal["auto", "loo", "session"] = "auto"  # auto: loo when valid/test samples have session -1
    split: Literal["valid", "test"] = "test"
    max_history: int = 0  # items of history given to every model; 0 = 20 (loo, TIGER) / 50 (session)
    m: int = 5  # session length of the next-session protocol
    beam_size: int = 32  # generative models (>= the largest K of the protocol's ranking)
    batch_size: int = 64  # requests per beam-search call
    max_samples: int = 0  # > 0: score only the first N samples (the same N for the model and the baselines)
    threads: int = 2
    progress: bool = True  # tqdm bars on stderr over the scored samples (running Recall@K in the postfix)
    bootstrap: int = 1000  # resamples for metrics.json's 95 % intervals and paired differences (0 = none)
    bootstrap_seed: int = 0
    # models with the copy head: added to its gate's log-odds (> 0 copies less); None = the run's (run.json
    # decoding, `onerec tune --apply`; else 0)
    copy_gate_bias: float | None = None
    # models with model.item_head: its weight in beam search; None = the run's (run.json decoding, else the model's)
    item_head_weight: float | None = None
    spread_beams: bool = False  # session beams with distinct first items (generate_sessions(spread=True))
    # with spread_beams: "joint" puts the joint search's top beam first (the session G), then the spread beams
    spread_top: Literal["spread", "joint"] = "spread"
    # next-session Recall@K list after the top beam: "beam" = the union of the next beams in beam order (EVAL.md §2),
    # "marginal" = the same union ranked by each item's share of the beams' probability mass
    union_order: Literal["beam", "marginal"] = "beam"
    # a session model scored like an item-wise one: its first-item distribution ranked by beam search, the first m
    # items the session. A diagnostic of how the ranked list is formed, not EVAL.md §2's scoring of a session model
    next_item_lists: bool = False

    def __post_init__(self) -> None:
        for name in ("m", "beam_size", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.spread_top == "joint" and not self.spread_beams:
            raise ConfigError('eval.spread_top = "joint" orders spread beams: it needs eval.spread_beams = true')
        if self.copy_gate_bias is not None and not math.isfinite(self.copy_gate_bias):
            raise ConfigError(f"eval.copy_gate_bias must be finite, got {self.copy_gate_bias}")
        if self.item_head_weight is not None and not (math.isfinite(self.item_head_weight)
                                                      and self.item_head_weight >= 0):
            raise ConfigError(f"eval.item_head_weight must be finite and >= 0, got {self.item_head_weight}")
        for name in ("max_history", "max_samples", "bootstrap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0, got {getattr(self, name)}")

    def history_len(self, protocol: str) -> int:
        return self.max_history or (20 if protocol == "loo" else 50)

    def ks(self, protocol: str) -> tuple[int, ...]:
        return (5, 10) if protocol == "loo" else (10, 50)


__all__ = ["EvalConfig"]
