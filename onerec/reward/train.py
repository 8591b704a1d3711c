"""Training and evaluation of the reward model on logged sessions.

Design choices
- Trained on every logged session of ``train_splits`` (high quality or not: the model must know bad
  sessions), each with the user's history before it; one candidate per row (S = 1) in training.
- Loss (ONEREC.md §5): Σ over towers of BCE(session tower, session label) + ``item_loss_weight`` ·
  Σ over towers of BCE(item tower, item label); entries whose label is NaN (signal unknown) are masked.
- The epoch with the lowest loss on ``valid_split`` is kept (the last epoch when there is no valid split).
- Seeds: a ``torch.Generator`` drives init, shuffling and dropout masks; torch's global RNG (attention
  and MLP dropout) is forked and seeded inside training, so the caller's RNG state is left untouched.
- Evaluation compares, per tower on ``test_split``, AUC against the binary session label of (a) a
  per-item rate baseline (session score = mean over its items of the item's smoothed training rate;
  swt: sum of the items' mean watch time) and (b) a pointwise model: the same features and towers,
  trained the same way, with ``attention = False``.
- ``onerec reward train`` runs alone or under ``torchrun``: with several ranks (or ``micro_batch_size`` > 0,
  or a GPU) ``fit`` hands over to the world-size-free loop of ``onerec.reward.parallel`` (DDP or FSDP2,
  ``reward.strategy``); rank 0 alone echoes and writes the model directory.
- Progress (:class:`TrainProgress`, both loops): a tqdm bar on stderr over the training batches, rank 0 only,
  with the epoch, the running train loss and the last valid loss; ``reward.progress = false`` turns it off.
  The bar draws no random numbers, so the trained weights are the same with or without it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from onerec import dist as D
from onerec.io import OnerecError, atomic_dir, write_json
from onerec.reward import RewardConfig
from onerec.reward.data import Labels, SessionTable, encode_features, fit_thresholds, make_labels, read_catalog, read_sessions
from onerec.reward.metrics import auc, plot_reliability, reliability
from onerec.reward.model import CATALOG_KEYS, RewardModel

RATE_SMOOTHING = 10.0  # pseudo-count of the per-item rate baseline


def load_content(emb_dir: Path | None, n_items: int) -> np.ndarray:
    """Content embeddings ``EMB`` (I, d) float32 via ``onerec.embed.load_embeddings``, or (I, 0) without EMB."""
    if emb_dir is None:
        return np.zeros((n_items, 0), np.float32)
    from onerec.embed import load_embeddings

    emb = np.asarray(load_embeddings(emb_dir))
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise OnerecError(f"{emb_dir}: embeddings must be ({n_items}, d) for the data's {n_items} items, got {emb.shape}")
    return emb.astype(np.float32)


def session_rows(table: SessionTable, splits: list[str]) -> np.ndarray:
    """Rows of the given splits that have at least one item."""
    return np.flatnonzero(np.isin(table.split, splits) & (table.items >= 0).any(1))


def prepare(data_dir: Path, config: RewardConfig, emb_dir: Path | None = None) -> tuple[SessionTable, dict, dict, list[str]]:
    """Sessions, catalog arrays (features, content, which items keep an id embedding), meta, towers kept."""
    table = read_sessions(data_dir, config)
    items, users = read_catalog(data_dir)
    n_items = int(items["item"].max()) + 1
    for name, ids in (("sessions.items", table.items), ("samples.history", table.history)):
        if (ids >= n_items).any():
            raise OnerecError(f"{name}: {int((ids >= n_items).sum())} item id(s) >= {n_items} are not in items.parquet")
    n_users = max(int(table.user.max()) + 1, int(users["user"].max()) + 1 if users is not None and users.height else 0)
    train = session_rows(table, config.train_splits)
    if len(train) == 0:
        raise OnerecError(f"{data_dir}/sessions.parquet: no non-empty session in splits {config.train_splits}")
    thresholds = fit_thresholds(table, train, config.towers, config)
    labels = make_labels(table, config.towers, config, thresholds)
    towers, dropped = [], []
    for t in config.towers:
        if np.isnan(labels.session[t][train]).all():
            dropped.append(t)
        else:
            towers.append(t)
    if dropped and config.missing_towers == "error":
        raise OnerecError(f"{data_dir}/sessions.parquet: no label for tower(s) {', '.join(dropped)} in the training sessions")
    if not towers:
        raise OnerecError(f"{data_dir}/sessions.parquet: no training label for any tower of {config.towers}")
    ids = np.concatenate([table.items[train].ravel(), table.history[train].ravel()])
    counts = np.bincount(ids[ids >= 0], minlength=n_items)
    item_feats = encode_features(items, "item", n_items, config)
    user_feats = encode_features(users, "user", n_users, config)
    catalog = {
        "item_idx": item_feats.idx, "item_num": item_feats.numeric, "content": load_content(emb_dir, n_items),
        "item_known": counts >= max(1, config.min_item_count) if config.min_item_count else np.ones(n_items, bool),
        "user_idx": user_feats.idx, "user_num": user_feats.numeric,
    }
    meta = {
        "n_items": n_items, "n_users": n_users, "item_vocab": item_feats.vocab, "user_vocab": user_feats.vocab,
        "item_features": item_feats.columns, "user_features": user_feats.columns, "thresholds": {t: thresholds[t] for t in towers},
        "towers_dropped": dropped, "content_dim": int(catalog["content"].shape[1]),
        "items_with_id_embedding": int(catalog["item_known"].sum()),
    }
    return table, catalog, meta, towers


def _masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask])


def _batch(table: SessionTable, labels: Labels, rows: np.ndarray, towers: list[str]) -> dict[str, Any]:
    return {
        "history": torch.from_numpy(table.history[rows]),
        "sessions": torch.from_numpy(table.items[rows])[:, None, :],  # (B, 1, m)
        "users": torch.from_numpy(table.user[rows]),
        "session": {t: torch.from_numpy(labels.session[t][rows]) for t in towers},
        "item": {t: torch.from_numpy(labels.item[t][rows]) for t in towers},
    }


class TrainProgress:
    """Rank 0's view of training: a tqdm bar over ``total`` batches on stderr and one echoed line per epoch.

    The bar is silent on other ranks and with ``reward.progress = false``; ``echo`` is used on rank 0 only.
    """

    def __init__(self, config: RewardConfig, info: D.DistInfo, total: int,
                 echo: Callable[[str], None] | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="reward" if config.attention else "reward (pointwise)", unit="batch",
                        dynamic_ncols=True, disable=not (config.progress and info.is_main))
        self.echo = echo if info.is_main else None
        self.shown: dict[str, Any] = {}

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def batch(self, epoch: int, mean_loss: float) -> None:
        """One training batch done; ``mean_loss`` is the epoch's running mean."""
        self.shown.update(epoch=epoch, loss=f"{mean_loss:.4f}")
        self.bar.set_postfix(self.shown, refresh=False)
        self.bar.update(1)

    def epoch(self, entry: dict[str, float]) -> None:
        """An epoch's log ``entry``: its valid loss into the postfix, the whole entry as one echoed line."""
        if "valid_loss" in entry:
            self.shown["valid_loss"] = f"{entry['valid_loss']:.4f}"
            self.bar.set_postfix(self.shown)
        if self.echo is not None:
            with self.bar.external_write_mode():  # the bar steps aside while the line is printed
                self.echo(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))


def batch_loss(model: RewardModel, batch: dict[str, Any], item_weight: float,
               id_drop: tuple | None = None, user_drop: torch.Tensor | None = None) -> torch.Tensor:
    """L_RM = Σ_t BCE(session_t) + item_weight · Σ_t BCE(item_t), NaN labels masked."""
    s_logits, i_logits = model(batch["history"], batch["sessions"], batch["users"], id_drop, user_drop)
    loss = torch.zeros(())
    for t in D.unwrap(model).towers:
        loss = loss + _masked_bce(s_logits[t][:, 0], batch["session"][t])
        loss = loss + item_weight * _masked_bce(i_logits[t][:, 0], batch["item"][t])
    return loss


def fit(model: RewardModel, table: SessionTable, labels: Labels, train: np.ndarray, valid: np.ndarray,
        config: RewardConfig, echo: Callable[[str], None] | None = None,
        info: D.DistInfo | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place (seeded); keeps the best-validation epoch; returns the per-epoch log.

    Under torchrun (``info`` from ``onerec.dist.init_distributed``), with ``micro_batch_size`` > 0 or on a GPU
    the world-size-free loop of ``onerec.reward.parallel`` trains; one CPU process takes the loop below.
    """
    from onerec.reward.parallel import fit_parallel, uses_parallel_loop

    info = info or D.DistInfo()
    if uses_parallel_loop(config, info):
        return fit_parallel(model, table, labels, train, valid, config, info, echo)
    gen = torch.Generator().manual_seed(config.seed)
    log = []
    progress = TrainProgress(config, info, config.epochs * math.ceil(len(train) / config.batch_size), echo)
    with torch.random.fork_rng(devices=[]), progress:
        torch.manual_seed(config.seed)
        model.init_weights(gen)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best, best_state = float("inf"), None
        for epoch in range(config.epochs):
            model.train()
            t0, total, n = time.time(), 0.0, 0
            order = train[torch.randperm(len(train), generator=gen).numpy()]
            for start in range(0, len(order), config.batch_size):
                rows = order[start:start + config.batch_size]
                batch = _batch(table, labels, rows, model.towers)
                id_drop = (torch.rand(batch["history"].shape, generator=gen) < config.id_dropout,
                           torch.rand(batch["sessions"].shape, generator=gen) < config.id_dropout)
                user_drop = torch.rand(len(rows), generator=gen) < config.user_feature_dropout
                loss = batch_loss(model, batch, config.item_loss_weight, id_drop, user_drop)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total, n = total + float(loss.detach()) * len(rows), n + len(rows)
                progress.batch(epoch, total / n)
            entry = {"epoch": epoch, "train_loss": total / max(n, 1), "seconds": time.time() - t0}
            if len(valid):
                entry["valid_loss"] = evaluate_loss(model, table, labels, valid, config)
                if entry["valid_loss"] < best:
                    best, best_state = entry["valid_loss"], copy.deepcopy(model.state_dict())
            log.append(entry)
            progress.epoch(entry)
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return log


@torch.no_grad()
def evaluate_loss(model: RewardModel, table: SessionTable, labels: Labels, rows: np.ndarray, config: RewardConfig) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(rows), config.batch_size):
        part = rows[start:start + config.batch_size]
        total += float(batch_loss(model, _batch(table, labels, part, model.towers), config.item_loss_weight)) * len(part)
    return total / max(len(rows), 1)


def predict(model: RewardModel, table: SessionTable, rows: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Session probabilities ``{tower: (len(rows),)}`` plus ``"reward"`` of logged sessions."""
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        probs = model.score(torch.from_numpy(table.history[part]), torch.from_numpy(table.items[part])[:, None, :],
                            torch.from_numpy(table.user[part]))
        for key, value in probs.items():
            out.setdefault(key, []).append(value[:, 0].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def train_reward(data_dir: Path, out_dir: Path, config: RewardConfig, emb_dir: Path | None = None,
                 echo: Callable[[str], None] | None = None) -> RewardModel:
    """Train the session reward model on ``data_dir`` and write ``out_dir`` (reward.safetensors, reward.json).

    Alone or under ``torchrun``: every rank reads the data and returns the trained model (the same weights on
    every rank); rank 0 alone echoes and writes ``out_dir``. A process group created here is destroyed here.
    """
    torch.set_num_threads(config.threads)
    owns_group = not torch.distributed.is_initialized()  # a caller that set up the group tears it down
    info = D.init_distributed(config.device)
    try:
        return _train_reward(data_dir, out_dir, config, emb_dir, echo, info)
    finally:
        if owns_group:
            D.teardown()


def _train_reward(data_dir: Path, out_dir: Path, config: RewardConfig, emb_dir: Path | None,
                  echo: Callable[[str], None] | None, info: D.DistInfo) -> RewardModel:
    t0 = time.time()
    table, catalog, meta, towers = prepare(data_dir, config, emb_dir)
    labels = make_labels(table, towers, config, meta["thresholds"])
    train = session_rows(table, config.train_splits)
    valid = session_rows(table, [config.valid_split])
    model = RewardModel(config, towers, catalog, meta)
    log = fit(model, table, labels, train, valid, config, echo if info.is_main else None, info)
    model.meta.update({
        "data": str(data_dir), "emb": None if emb_dir is None else str(emb_dir), "train_sessions": int(len(train)),
        "valid_sessions": int(len(valid)), "sessions_without_sample": table.n_without_sample,
        "random_exposure_sessions": table.n_random,
        "train_log": log, "train_seconds": round(time.time() - t0, 2),
        "train_label_rates": {t: float(np.nanmean(labels.binary[t][train])) for t in towers},
    })
    if info.is_main:
        with atomic_dir(Path(out_dir)) as tmp:
            model.save(tmp)
    D.barrier()
    return model


def item_rate_scores(table: SessionTable, labels: Labels, train: np.ndarray, rows: np.ndarray,
                     towers: list[str], config: RewardConfig) -> dict[str, np.ndarray]:
    """Baseline (a): per-item smoothed training rates averaged over the session (swt: summed mean watch)."""
    n_items = int(max(table.items.max(), 0)) + 1
    items = table.items[train].ravel()
    valid_items = items >= 0
    out = {}
    for t in towers:
        value = (table.watch_ms if t == "swt" and config.swt_mode != "ratio" else labels.item[t])[train].ravel()
        known = valid_items & ~np.isnan(value)
        sums = np.bincount(items[known], weights=value[known], minlength=n_items)
        counts = np.bincount(items[known], minlength=n_items)
        prior = float(value[known].mean()) if known.any() else 0.0
        rate = (sums + RATE_SMOOTHING * prior) / (counts + RATE_SMOOTHING)
        sess = table.items[rows]
        per_item = np.where(sess >= 0, rate[np.clip(sess, 0, n_items - 1)], np.nan)
        per_item = np.where(sess >= n_items, prior, per_item)
        agg = np.nansum if t == "swt" and config.swt_mode != "ratio" else np.nanmean
        out[t] = agg(per_item, axis=1)
    return out


def evaluate_reward(rm_dir: Path, data_dir: Path, out_dir: Path | None = None, world_dir: Path | None = None,
                    baselines: bool = True, run_dir: Path | None = None) -> dict[str, Any]:
    """AUC per tower on the test split vs the baselines, calibration PNGs, optional simulator Spearman."""
    model = RewardModel.load(rm_dir)
    config = model.config
    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir) if out_dir is not None else Path(rm_dir) / "eval"
    table = read_sessions(data_dir, config)
    if int(table.items.max()) >= model.n_items or int(table.history.max()) >= model.n_items:
        raise OnerecError(f"{data_dir}: item ids beyond the reward model's catalogue of {model.n_items} items")
    labels = make_labels(table, model.towers, config, model.meta["thresholds"])
    train = session_rows(table, config.train_splits)
    test = session_rows(table, [config.test_split])
    if len(test) == 0:
        raise OnerecError(f"{data_dir}/sessions.parquet: no non-empty session with split {config.test_split!r}")
    t0 = time.time()
    preds = {"reward_model": predict(model, table, test)}
    if baselines:
        preds["item_rate"] = item_rate_scores(table, labels, train, test, model.towers, config)
        catalog = {k: getattr(model.item_encoder if k.startswith("item") or k == "content" else model.user_tower, k)
                   for k in CATALOG_KEYS}
        pointwise_config = dataclasses.replace(config, attention=False, match_features=False)
        pointwise = RewardModel(pointwise_config, model.towers, catalog, model.meta)
        fit(pointwise, table, labels, train, session_rows(table, [config.valid_split]), pointwise_config)
        preds["pointwise"] = predict(pointwise, table, test)
    # the session attention can only matter where a session has several items: AUC on those too
    multi = (table.items[test] >= 0).sum(1) >= 2  # (len(test),)
    metrics: dict[str, Any] = {"test_sessions": int(len(test)), "train_sessions": int(len(train)),
                               "multi_item_test_sessions": int(multi.sum()), "towers": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for t in model.towers:
        y = labels.binary[t][test]
        entry = {"positives": int(np.nansum(y)), "labelled": int((~np.isnan(y)).sum()),
                 "positives_multi_item": int(np.nansum(y[multi]))}
        for name, p in preds.items():
            entry[f"auc_{name}"] = auc(y, p[t])
            entry[f"auc_{name}_multi_item"] = auc(y[multi], p[t][multi])
        # the towers predict the session target (a rate for "mean"), so that is what calibration compares with
        curves = {n: reliability(labels.session[t][test], p[t]) for n, p in preds.items() if n != "item_rate"}
        entry["ece_reward_model"] = curves["reward_model"]["ece"][0]
        plot_reliability(curves, f"{t}: reliability on {config.test_split} ({len(test)} sessions)", out_dir / f"calibration_{t}.png")
        metrics["towers"][t] = entry
    metrics["eval_seconds"] = round(time.time() - t0, 2)
    if world_dir is not None:
        from onerec.reward.simcheck import simulator_spearman

        metrics["simulator"] = simulator_spearman(model, table, test, Path(data_dir), Path(world_dir),
                                                  run_dir=None if run_dir is None else Path(run_dir))
    write_json(out_dir / "metrics.json", metrics)
    return metrics

