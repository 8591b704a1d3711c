"""Reward-model training under ``torchrun`` (or with gradient accumulation): the world-size-free loop.

Design choices
- ``onerec.reward.train.fit`` hands training to :func:`fit_parallel` when the process is one of several
  ranks, when ``reward.micro_batch_size`` > 0 or when the device is not the CPU. One CPU process with
  ``micro_batch_size = 0`` keeps the original sequential loop (one generator drives the shuffle and the
  masks; the last partial batch is trained), so single-process outputs are unchanged.
- Data order follows ``onerec.dist``: each epoch is a permutation of the training sessions that depends on
  (seed, epoch) only, cut into global batches of ``batch_size`` sessions (the remainder is dropped) and each
  into ``batch_size / micro_batch_size`` micro-batches; rank r takes its consecutive share
  (``rank_micro_batches``). The id / user-feature dropout masks and torch's dropout are seeded per
  micro-batch from (seed, step, global micro-batch index). So 1 process accumulating k micro-batches and
  k ranks see the same micro-batches with the same masks: loss curves and weights agree up to the order
  of floating-point sums.
- A step's loss is the mean of its micro-batches' losses (each the masked BCE means of ``batch_loss``):
  DDP averages gradients over ranks, accumulation divides by the micro-batches of a rank.
- Under torchrun a deep copy of the model is wrapped, ``strategy = "ddp"`` (replicas) or ``"fsdp"`` (FSDP2,
  one unit per session block), and its (gathered) weights are copied back into the caller's model at the
  end, so no wrapper's hooks stay on the caller's parameters. Catalogue buffers (feature tables, content
  embeddings) never change, so DDP does not re-send them at every forward.
- Validation: the valid split's batches (``batch_size`` rows, as alone) are dealt round-robin to the ranks,
  padded with weight-0 repeats so every rank runs the same number of forwards (FSDP gathers are
  collective); the summed loss is all-reduced, so every rank keeps the same best epoch. Its weights are
  gathered on rank 0 (``full_model_state``) and restored (``load_model_state``) at the end.
- Logged per epoch, identical on every rank: the train loss (sum over micro-batches of loss x sessions,
  all-reduced, over the sessions trained) and the valid loss; ``echo`` is called on rank 0 only. The model
  ends on the CPU with the final weights on every rank, so rank 0 saves it and any rank can score.
- Progress: rank 0's ``TrainProgress`` bar (stderr) counts optimizer steps, its running loss is rank 0's own
  micro-batches (no extra collective); the echoed epoch line carries the all-reduced figures.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from onerec import dist as D
from onerec.io import OnerecError
from onerec.reward import RewardConfig
from onerec.reward.data import Labels, SessionTable
from onerec.reward.model import RewardModel
from onerec.reward.train import TrainProgress, _batch, batch_loss
from onerec.train import micro_seed


def uses_parallel_loop(config: RewardConfig, info: D.DistInfo) -> bool:
    """True when training must take the world-size-free loop (several ranks, accumulation or a GPU)."""
    return info.distributed or config.micro_batch_size > 0 or info.device.type != "cpu"


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: {t: x.to(device) for t, x in v.items()} if isinstance(v, dict) else v.to(device)
            for k, v in batch.items()}


def _masks(batch: dict[str, Any], config: RewardConfig, seed: int, device: torch.device
           ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Id dropout (history, session items) and user-feature dropout of one micro-batch, from its own seed."""
    gen = torch.Generator().manual_seed(seed)
    id_drop = (torch.rand(batch["history"].shape, generator=gen) < config.id_dropout,
               torch.rand(batch["sessions"].shape, generator=gen) < config.id_dropout)
    user_drop = torch.rand(batch["users"].shape[0], generator=gen) < config.user_feature_dropout
    return (id_drop[0].to(device), id_drop[1].to(device)), user_drop.to(device)


@torch.no_grad()
def valid_loss(model: torch.nn.Module, table: SessionTable, labels: Labels, rows: np.ndarray,
               config: RewardConfig, info: D.DistInfo) -> float:
    """Session-weighted mean of ``batch_loss`` over ``rows`` in batches of ``batch_size``, on every rank."""
    model.eval()
    towers = D.unwrap(model).towers
    starts = list(range(0, len(rows), config.batch_size))
    padded = -(-len(starts) // info.world_size) * info.world_size
    total = 0.0
    for k in range(info.rank, padded, info.world_size):
        start = starts[min(k, len(starts) - 1)]
        part = rows[start:start + config.batch_size]
        loss = float(batch_loss(model, _to(_batch(table, labels, part, towers), info.device), config.item_loss_weight))
        if k < len(starts):
            total += loss * len(part)
    total_t = D.all_reduce_sum(torch.tensor([total], dtype=torch.float64, device=info.device))
    return float(total_t[0]) / max(len(rows), 1)


def fit_parallel(model: RewardModel, table: SessionTable, labels: Labels, train: np.ndarray, valid: np.ndarray,
                 config: RewardConfig, info: D.DistInfo, echo: Callable[[str], None] | None = None
                 ) -> list[dict[str, float]]:
    """Train ``model`` in place on ``info``'s share of every step; keeps the best-validation epoch."""
    micro = config.micro_batch_size or config.batch_size // info.world_size
    try:
        accum = D.accumulation_steps(config.batch_size, micro, info.world_size)
    except ValueError as err:
        raise OnerecError(f"reward: {err}") from None
    if len(train) < config.batch_size:
        raise OnerecError(f"reward: {len(train)} training sessions, fewer than reward.batch_size={config.batch_size}")
    device = info.device
    towers = model.towers
    log: list[dict[str, float]] = []
    step = 0
    progress = TrainProgress(config, info, config.epochs * (len(train) // config.batch_size), echo)
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []), progress:
        model.init_weights(torch.Generator().manual_seed(config.seed))
        wrapped = D.wrap_model(copy.deepcopy(model) if info.distributed else model, info, config.strategy,
                               broadcast_buffers=False)
        opt = torch.optim.AdamW(wrapped.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best, best_state = math.inf, None
        for epoch in range(config.epochs):
            wrapped.train()
            t0 = time.time()
            sums = torch.zeros(2, dtype=torch.float64)  # sum of loss x sessions, sessions
            for batch_idx in D.global_batches(len(train), config.batch_size, config.seed, epoch):
                mine = D.rank_micro_batches(batch_idx, micro, info.rank, info.world_size)
                opt.zero_grad(set_to_none=True)
                for i, (j, idx) in enumerate(mine):
                    batch = _batch(table, labels, train[idx], towers)
                    seed = micro_seed(config.seed, step, j)
                    id_drop, user_drop = _masks(batch, config, seed, device)
                    torch.manual_seed(seed)  # attention / MLP dropout
                    with D.grad_sync(wrapped, i == len(mine) - 1):
                        loss = batch_loss(wrapped, _to(batch, device), config.item_loss_weight, id_drop, user_drop)
                        (loss / accum).backward()
                    sums += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=torch.float64)
                torch.nn.utils.clip_grad_norm_(wrapped.parameters(), 1.0)
                opt.step()
                step += 1
                progress.batch(epoch, float(sums[0] / sums[1]))
            totals = D.all_reduce_sum(sums.to(device)).cpu()
            entry = {"epoch": epoch, "train_loss": float(totals[0] / totals[1]), "seconds": time.time() - t0}
            if len(valid):
                entry["valid_loss"] = valid_loss(wrapped, table, labels, valid, config, info)
                if entry["valid_loss"] < best:  # the same all-reduced value on every rank
                    best = entry["valid_loss"]
                    best_state = {k: v.clone() for k, v in D.full_model_state(wrapped).items()}
            log.append(entry)
            progress.epoch(entry)
        if best_state is not None:
            D.load_model_state(wrapped, best_state)
        if info.distributed:  # the wrapped copy's weights into ``model``, on every rank
            D.copy_back(wrapped, model, config.strategy)
    model.cpu().eval()
    return log
