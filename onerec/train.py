"""Seed-model training: ``onerec train --data DATA --tokenizer TOK --config FILE --out RUN [--resume]``.

Design choices
- One loop, alone or under ``torchrun`` (``onerec.dist``): AdamW (decay on matrices only), linear warmup
  then cosine to ``min_lr_ratio * lr`` (a pure function of the step, so the "scheduler state" is the step),
  gradient clipping, accumulation, optional bf16 autocast (fp16 is not offered: never on CPU).
- ``batch_size`` is the *global* batch per optimizer step; ``micro_batch_size`` is one forward on one rank,
  ``accum = batch_size / (micro_batch_size * world)``. The data order is a function of (seed, epoch) only
  and each micro-batch's dropout is seeded from (seed, step, micro-batch index) inside ``fork_rng``, so a
  resumed run repeats the uninterrupted one exactly and 1 or N ranks see the same micro-batches.
- Validation (``onerec.validation``) is the token-weighted NTP loss over the ``valid`` split (first
  ``val_samples`` by sample id), identical on every rank; with ``select_metric = "recall@K"`` / ``"ndcg@K"``
  also next-item beam search over the first ``select_samples`` of them. Early stopping keeps the weights
  best by ``select_metric`` in ``RUN/model.safetensors`` and stops after ``patience`` validations without
  improvement.
- Checkpoints (``onerec.checkpoint``): full, name-keyed state on rank 0, ``RUN/state/`` replaced atomically.
  On resume, ``train_log.jsonl`` lines after the checkpoint step are dropped and TensorBoard purges them.
- Logging on rank 0: tqdm (loss, tokens/s), ``RUN/train_log.jsonl``, TensorBoard scalars in ``RUN/tb``.
  Tokens are the session's code tokens the loss is over (items x D).
- The reward-model and DPO trainers reuse ``onerec.dist`` (sharding, wrapping, collectives, full state
  dicts), ``lr_at``, ``make_optimizer`` and ``onerec.checkpoint`` (save/load state); their loops are their own.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from onerec.batching import SampleTable, collate
from onerec.config import ConfigError, to_dict
from onerec.io import OnerecError
from onerec import checkpoint as ckpt
from onerec import dist as D
from onerec.validation import METRIC, metric_k, ranking_on_rank0, validate


@dataclass
class TrainConfig:
    """``[train]`` table: optimisation, schedule, validation, checkpoints, parallelism."""

    seed: int = 0  # data order and dropout
    batch_size: int = 64  # global samples per optimizer step (all ranks, all accumulation micro-batches)
    micro_batch_size: int = 0  # samples per forward on one rank; 0 = batch_size / world_size
    epochs: int = 10
    max_steps: int = 0  # > 0: stop after this many optimizer steps (also the cosine horizon)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine floor as a share of lr
    warmup_steps: int = 100
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0  # max global grad norm; 0 = no clipping
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast; fp16 is not offered
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    val_samples: int = 4096  # validate on the first N valid samples (by sample id); 0 = all
    patience: int = 3  # validations without improvement before stopping; 0 = never stop early
    save_every: int = 0  # steps between resumable checkpoints; 0 = at each validation
    log_every: int = 10
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch threads per rank; 0 = leave torch's default (torchrun sets 1)
    progress: bool = True  # tqdm bar on rank 0
    select_metric: str = "ntp_loss"  # best weights and early stopping by: ntp_loss | recall@K | ndcg@K (valid)
    select_samples: int = 2048  # ranking metrics: the first N valid samples (beam search is costly); 0 = all
    select_beam: int = 0  # ranking metrics: beams of the next-item search; 0 = max(20, K)
    seed_sessions: Literal["high_quality", "all"] = "high_quality"  # which sessions train M_0 (windows always)
    # what a session sample teaches: every item the request showed, in order (the paper), or only the items the
    # user engaged positively (data's target_positive), in order; sessions without any are dropped
    session_items: Literal["all", "positive"] = "all"
    # > 0: also train on each user's earliest training history cut into sessions of this many items (its prior
    # positives, e.g. KuaiRand's two weeks before the log, become targets as they are for SASRec); 0 = off
    history_sessions: int = 0
    tensorboard: bool = True  # scalars in RUN/tb (rank 0)

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("micro_batch_size", "max_steps", "warmup_steps", "eval_every", "val_samples", "patience",
                     "save_every", "threads", "grad_clip", "weight_decay", "history_sessions"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if not METRIC.match(self.select_metric):
            raise ConfigError(f"train.select_metric must be ntp_loss, recall@K or ndcg@K, got {self.select_metric!r}")
        for name in ("select_samples", "select_beam"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"train.batch_size={self.batch_size} is not a multiple of "
                              f"train.micro_batch_size={self.micro_batch_size}")


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine down to ``min_ratio*lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) only; call after wrapping (FSDP2 makes DTensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def micro_seed(seed: int, step: int, micro: int) -> int:
    """Seed of the dropout of one micro-batch: depends on (seed, step, global micro-batch index) only."""
    return ((seed * 1_000_003 + step) * 1_009 + micro) % (2**63 - 1)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _scalar(x: torch.Tensor) -> torch.Tensor:
    return x.full_tensor() if hasattr(x, "full_tensor") else x


class _Logger:
    """Rank-0 sinks: train_log.jsonl, TensorBoard, tqdm. No-op objects on other ranks."""

    def __init__(self, run: Path, info: D.DistInfo, start_step: int, total: int, progress: bool,
                 tensorboard: bool) -> None:
        self.main = info.is_main
        self.tb = self.bar = None
        if not self.main:
            return
        log = run / "train_log.jsonl"
        if start_step and log.exists():  # drop what an interrupted run logged after its checkpoint
            kept = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step]
            log.write_text("".join(f"{ln}\n" for ln in kept))
        elif not start_step:
            log.write_text("")
        self.log = log.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"), purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start_step, desc="train", dynamic_ncols=True)

    def record(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        for key, value in row.items():
            if self.tb is not None and key not in ("step", "epoch", "kind") and isinstance(value, (int, float)):
                self.tb.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def tick(self, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")

    def close(self) -> None:
        if self.main:
            self.log.close()
            if self.tb is not None:
                self.tb.close()
            if self.bar is not None:
                self.bar.close()


def fit(
    model: nn.Module,
    train: SampleTable,
    valid: SampleTable | None,
    cfg: TrainConfig,
    run: Path,
    run_info: dict[str, Any],
    info: D.DistInfo,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (an unwrapped ``OneRec``) into run directory ``run``; returns the final run info.

    ``on_step(step)`` is called after each optimizer step (and its checkpoint) on every rank; tests use it
    to interrupt a run. Files are written by rank 0 only.
    """
    run = Path(run)
    core_cfg = model.config
    micro = cfg.micro_batch_size or cfg.batch_size // info.world_size
    try:
        accum = D.accumulation_steps(cfg.batch_size, micro, info.world_size)
    except ValueError as err:
        raise OnerecError(f"train: {err}") from None
    steps_per_epoch = len(train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise OnerecError(f"train split has {len(train)} samples, fewer than train.batch_size={cfg.batch_size}"
                          + (" (only high-quality sessions train M_0: relax the data.hq_* rules or set "
                             "train.seed_sessions=all)" if cfg.seed_sessions == "high_quality" else ""))
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    eval_every = cfg.eval_every or steps_per_epoch
    save_every = cfg.save_every or eval_every
    n_val = min(len(valid), cfg.val_samples or len(valid)) if valid is not None else 0

    pos = {"step": 0, "epoch": 0, "batch": 0, "best_val_ntp_loss": math.inf, "best_step": -1, "bad_evals": 0,
           "samples": 0, "tokens": 0, "best_val_score": math.inf}  # score: lower is better (-metric for ranking)
    select_k = metric_k(cfg.select_metric)
    n_rank = min(n_val, cfg.select_samples or n_val) if select_k else 0
    opt_state = None
    if resume:  # read and check everything before anything is written
        weights, opt_state, rng, meta = ckpt.load_state(run)
        ckpt.check_compatible(weights, model, run / ckpt.STATE_DIR / ckpt.WEIGHTS)
        model.load_state_dict(weights, strict=True)
        ckpt.set_rng_state(rng)
        pos.update({k: meta[k] for k in pos if k in meta})
        if "best_val_score" not in meta and not select_k:  # state written before select_metric existed
            pos["best_val_score"] = pos["best_val_ntp_loss"]
    # ranking validation under FSDP runs on an unsharded copy (rank 0 loads the gathered weights into it)
    eval_copy = copy.deepcopy(model) if n_rank and info.world_size > 1 and cfg.strategy == "fsdp" else None
    wrapped = D.wrap_model(model, info, cfg.strategy)
    optimizer = make_optimizer(wrapped, cfg)
    if opt_state is not None:
        D.load_optimizer_state(wrapped, optimizer, opt_state)
    if info.is_main:
        ckpt.write_run_info(run, run_info)
    logger = _Logger(run, info, pos["step"], total, cfg.progress, cfg.tensorboard)
    autocast = lambda: torch.autocast(info.device.type, dtype=torch.bfloat16,  # noqa: E731
                                      enabled=cfg.precision == "bf16")
    rng_devices = [info.device.index] if info.device.type == "cuda" else []  # device ids for fork_rng
    loss_free = bool(getattr(core_cfg, "loss_free_balance", False))

    def checkpoint_state() -> None:
        weights = D.full_model_state(wrapped)
        opt = D.full_optimizer_state(wrapped, optimizer)
        if info.is_main:
            ckpt.save_state(run, weights, opt, ckpt.rng_state(), {**pos, "world_size": info.world_size,
                                                                   "strategy": cfg.strategy})
        D.barrier()

    def validation_point() -> bool:
        """Validate, keep the best weights; True when early stopping says stop."""
        if n_val == 0:
            return False
        val = validate(wrapped, valid, n_val, micro, info, autocast)
        row = {"kind": "val", "step": pos["step"], "epoch": pos["epoch"], "val_ntp_loss": val}
        score = val
        if select_k:
            ranking = ranking_on_rank0(wrapped, eval_copy, valid, n_rank, select_k, cfg.select_beam or max(20, select_k))
            row.update({f"val_{k}": v for k, v in ranking.items()})
            score = -ranking[cfg.select_metric]
        if score < pos["best_val_score"]:
            pos.update(best_val_score=score, best_val_ntp_loss=val, best_step=pos["step"], bad_evals=0)
            weights = D.full_model_state(wrapped)
            if info.is_main:
                run_info["weights_sha256"] = ckpt.save_weights(weights, run / ckpt.WEIGHTS)
                run_info.update(best_step=pos["step"], best_val_ntp_loss=val)
                if select_k:
                    run_info[f"best_val_{cfg.select_metric}"] = -score
                ckpt.write_run_info(run, run_info)
        else:
            pos["bad_evals"] += 1
        row["best_val_ntp_loss"] = pos["best_val_ntp_loss"]
        if select_k:
            row[f"best_val_{cfg.select_metric}"] = -pos["best_val_score"]
        logger.record(row)
        return bool(cfg.patience) and pos["bad_evals"] >= cfg.patience

    try:
        wrapped.train()
        stopped_early = bool(cfg.patience) and pos["bad_evals"] >= cfg.patience  # a resumed, finished run
        t_last = time.perf_counter()
        while pos["step"] < total and not stopped_early:
            batches = D.global_batches(len(train), cfg.batch_size, cfg.seed, pos["epoch"])
            while pos["batch"] < len(batches) and pos["step"] < total:
                step = pos["step"]
                lr = lr_at(step, cfg.lr, cfg.warmup_steps, total, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                mine = D.rank_micro_batches(batches[pos["batch"]], micro, info.rank, info.world_size)
                sums = torch.zeros(5, dtype=torch.float64)  # loss, ntp, aux, code tokens, item-head loss
                routed: list[torch.Tensor] = []
                for i, (j, idx) in enumerate(mine):
                    batch = _to(collate(train, idx, core_cfg.max_history, core_cfg.max_session_items), info.device)
                    with D.grad_sync(wrapped, i == len(mine) - 1), torch.random.fork_rng(devices=rng_devices):
                        torch.manual_seed(micro_seed(cfg.seed, step, j))
                        with autocast():
                            out = wrapped(**batch)
                        (out.loss / accum).backward()
                    item_loss = 0.0 if out.item_loss is None else out.item_loss.item()
                    sums += torch.tensor([out.loss.item(), out.ntp_loss.item(), out.aux_loss.item(), out.n_tokens,
                                          item_loss], dtype=torch.float64)
                    if loss_free:
                        counts = [s.tokens_per_expert.detach().double().cpu() for s in out.router]
                        routed = counts if not routed else [a + b for a, b in zip(routed, counts)]
                norm = nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip or math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if loss_free and routed:  # same bias update on every rank: counts summed over all micro-batches
                    summed = D.all_reduce_sum(torch.stack(routed).to(info.device)).cpu()
                    model.update_balance_bias([SimpleNamespace(tokens_per_expert=c) for c in summed])
                totals = D.all_reduce_sum(sums.to(info.device)).cpu()
                n_micro = accum * info.world_size
                pos.update(step=step + 1, batch=pos["batch"] + 1, samples=pos["samples"] + cfg.batch_size,
                           tokens=pos["tokens"] + int(totals[3]))
                if pos["batch"] == len(batches):
                    pos.update(epoch=pos["epoch"] + 1, batch=0)
                now = time.perf_counter()
                dt, t_last = now - t_last, now
                loss = float(totals[0] / n_micro)
                logger.tick(loss, float(totals[3]) / dt)
                if pos["step"] % cfg.log_every == 0 or pos["step"] == total:
                    logger.record({"kind": "train", "step": pos["step"], "epoch": pos["epoch"], "loss": loss,
                                   "ntp_loss": float(totals[1] / n_micro), "aux_loss": float(totals[2] / n_micro),
                                   "lr": lr, "grad_norm": float(_scalar(norm)), "samples_per_s": cfg.batch_size / dt,
                                   "tokens_per_s": float(totals[3]) / dt}
                                  | ({"item_loss": float(totals[4] / n_micro)} if model.config.item_head else {}))
                last = pos["step"] == total
                if pos["step"] % eval_every == 0 or last:
                    stopped_early = validation_point()
                if pos["step"] % save_every == 0 or last or stopped_early:
                    checkpoint_state()
                if on_step is not None:
                    on_step(pos["step"])
                if stopped_early or pos["batch"] == 0:
                    break
    finally:
        logger.close()
    if n_val == 0:  # nothing to select on: the final weights are the run's weights
        weights = D.full_model_state(wrapped)
        if info.is_main:
            run_info["weights_sha256"] = ckpt.save_weights(weights, run / ckpt.WEIGHTS)
    run_info.update(steps=pos["step"], epochs_done=pos["epoch"], stopped_early=stopped_early,
                    samples_seen=pos["samples"], tokens_seen=pos["tokens"], world_size=info.world_size)
    if info.is_main:
        ckpt.write_run_info(run, run_info)
    D.barrier()
    return run_info


# ----------------------------------------------------------------------------- command
def _read_split_tables(data: Path, max_item: int, rule: str = "high_quality", item_wise: bool = False,
                       log=print, session_items: str = "all",
                       history_chunk: int = 0) -> tuple[SampleTable, SampleTable | None]:
    """The seed model's train/valid samples of a data directory (docs/ARCHITECTURE.md §1). ``item_wise``
    (a model with ``max_session_items = 1``): every target item of a training session becomes its own sample
    (validation keeps whole sessions: the ranking check scores the session's item set). ``session_items =
    "positive"``: targets keep only their positively engaged items (train and valid, so a ranking-based
    model selection scores what the next-session test scores). ``history_chunk > 0``: plus the training
    sessions cut from each user's earliest training history (``batching.history_sessions``)."""
    import polars as pl

    from onerec.batching import item_wise as explode_targets
    from onerec.batching import history_sessions, positive_targets, seed_samples

    path = data / "samples.parquet"
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    cols = ["sample", "session", "split", "history", "history_ts", "target"] + (["user", "ts_ms"] if history_chunk else [])
    positives = session_items == "positive" and "target_positive" in pl.read_parquet_schema(path)
    samples = pl.read_parquet(path, columns=cols + (["target_positive"] if positives else []))
    if positives:
        before = int(samples["target"].list.len().sum())
        samples = positive_targets(samples)
        log(f"train.session_items = positive: {int(samples['target'].list.len().sum()):,} of {before:,} target "
            "items kept")
    sessions = None
    if (data / "sessions.parquet").is_file():
        sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    train_rows = seed_samples(samples, sessions, "train", rule)
    if history_chunk:
        extra = history_sessions(samples.filter(pl.col("split") == "train"), history_chunk)
        log(f"train.history_sessions = {history_chunk}: {len(extra):,} sessions ({int(extra['target'].list.len().sum()):,} "
            f"items) cut from the users' earliest training histories, added to {len(train_rows):,}")
        train_rows = pl.concat([train_rows.select(extra.columns), extra])
    if item_wise and int(train_rows["target"].list.len().max() or 0) > 1:
        before = len(train_rows)
        train_rows = explode_targets(train_rows)
        log(f"item-wise model (model.max_session_items = 1): {before:,} training samples -> {len(train_rows):,} "
            "single-item targets")
    train = SampleTable.from_frame(train_rows)
    valid_rows = seed_samples(samples, sessions, "valid", rule)
    valid = SampleTable.from_frame(valid_rows) if len(valid_rows) else None
    for name, table in (("train", train), ("valid", valid)):
        if table is not None and table.max_item() > max_item:
            raise OnerecError(f"{path}: {name} samples reference item {table.max_item()}, but the tokenizer "
                              f"has {max_item + 1} items: data and tokenizer come from different item sets")
    return train, valid


def _read_embeddings(emb: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    path = emb / "embeddings.safetensors"
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    return load_file(str(path))["embeddings"].astype(np.float32)


@dataclass
class PreparedRun:
    """Everything ``fit`` needs, read and checked from the command's inputs (nothing written yet)."""

    model: nn.Module
    train: SampleTable
    valid: SampleTable | None
    config: TrainConfig
    run_info: dict[str, Any]


def prepare_run(data: Path, tokenizer: Path, config: Path | None, out: Path, emb: Path | None = None,
                overrides: tuple[str, ...] = (), resume: bool = False) -> PreparedRun:
    """Load configs, tokenizer, samples (and embeddings); check they fit together and with ``out``."""
    import polars as pl

    from onerec import __version__
    from onerec.config import load_section
    from onerec.model.onerec import ModelConfig, OneRec
    from onerec.tokenizer.codec import SemanticIds

    model_cfg = load_section(ModelConfig, "model", config, overrides)
    cfg = load_section(TrainConfig, "train", config, overrides)
    out, data, tokenizer = Path(out), Path(data), Path(tokenizer)
    if resume and not (out / ckpt.STATE_DIR).is_dir():
        raise OnerecError(f"--resume: {out / ckpt.STATE_DIR} does not exist")
    if not resume and out.exists() and any(out.iterdir()):
        raise OnerecError(f"{out} exists and is not empty; pass --resume to continue it or choose another --out")
    semantic_ids = SemanticIds.load(tokenizer)
    items_path = data / "items.parquet"
    if not items_path.is_file():
        raise OnerecError(f"missing file: {items_path}")
    n_items = pl.scan_parquet(items_path).select(pl.len()).collect().item()
    if n_items != semantic_ids.n_items:
        raise OnerecError(f"{items_path} has {n_items} items but the tokenizer {tokenizer} has "
                          f"{semantic_ids.n_items}: data and tokenizer come from different item sets")
    train, valid = _read_split_tables(data, semantic_ids.n_items - 1, cfg.seed_sessions,
                                      item_wise=model_cfg.max_session_items == 1,
                                      log=lambda msg: print(msg, file=sys.stderr) if D.is_main() else None,
                                      session_items=cfg.session_items, history_chunk=cfg.history_sessions)
    item_embeddings = None
    if emb is not None:
        item_embeddings = _read_embeddings(Path(emb))
        if model_cfg.item_emb_dim == 0:
            model_cfg.item_emb_dim = int(item_embeddings.shape[1])
    elif model_cfg.item_emb_dim:
        raise OnerecError(f"model.item_emb_dim={model_cfg.item_emb_dim} needs --emb EMB")
    codes_sha = ckpt.codes_sha256(semantic_ids.codes)
    model = OneRec(model_cfg, semantic_ids, item_embeddings)
    run_info = {
        "version": __version__, "model_config": to_dict(model_cfg), "train_config": to_dict(cfg),
        "tokenizer": str(tokenizer.resolve()), "codes_sha256": codes_sha, "data": str(data.resolve()),
        "emb": str(Path(emb).resolve()) if emb is not None else None, "n_items": semantic_ids.n_items,
        "level_sizes": semantic_ids.level_sizes, "train_samples": len(train),
        "valid_samples": len(valid) if valid is not None else 0, "params": model.param_counts(),
    }
    if resume:
        previous = ckpt.read_run_info(out)
        if previous.get("codes_sha256") != codes_sha:
            raise OnerecError(f"--resume: tokenizer {tokenizer} has other codes than the one {out} was trained "
                              f"with ({previous.get('tokenizer')})")
        run_info.update({k: v for k, v in previous.items()
                         if k in ("best_step", "weights_sha256") or k.startswith("best_val_")})
    return PreparedRun(model, train, valid, cfg, run_info)


def train_command(data: Path, tokenizer: Path, config: Path | None, out: Path, emb: Path | None = None,
                  overrides: tuple[str, ...] = (), resume: bool = False,
                  on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Everything ``onerec train`` does, alone or under torchrun; returns the run info."""
    prepared = prepare_run(data, tokenizer, config, out, emb, overrides, resume)
    cfg = prepared.config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    owns_group = not torch.distributed.is_initialized()  # a caller that set up the group tears it down
    info = D.init_distributed(cfg.device)
    try:
        if info.is_main:
            Path(out).mkdir(parents=True, exist_ok=True)
        return fit(prepared.model, prepared.train, prepared.valid, cfg, Path(out), prepared.run_info, info,
                   resume=resume, on_step=on_step)
    finally:
        if owns_group:
            D.teardown()
