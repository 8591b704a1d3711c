"""``onerec evaluate`` / ``onerec baseline`` as Python functions: train baselines, score a run and its baselines.

Design choices
- One evaluation set per (data directory, protocol, split, history length, sample cap), built by
  :func:`evaluation_set`; the model and every baseline are scored on that same object by the same harness.
- A baseline directory holds ``baseline.json`` (kind, data path, configs, train time, validation/test
  metrics) and its weights (``model.safetensors`` for SASRec, ``popularity.safetensors`` for the counts).
  ``onerec evaluate --baseline DIR`` reloads it and re-scores it on the run's evaluation set, and refuses a
  baseline trained on another data directory.
- ``RUN/metrics.json``: ``{"protocol", "split", "data", "n_samples", "max_history", ..., "models": {"onerec":
  {...}, "popularity": {...}, "sasrec_ce": {...}}}`` with the same metric names for every model
  (``recall@5``, ``ndcg@5``, ``recall@10``, ``ndcg@10`` for leave-one-out; ``session_recall@m``,
  ``session_ndcg@m``, ``recall@10``, ``ndcg@10``, ``recall@50``, ``ndcg@50`` for sessions) plus the
  generative model's health metrics.
- Every scoring pass shows a tqdm bar on stderr named after the model and split (``onerec test``), with the
  running Recall@K; ``eval.progress = false`` turns them off. stdout stays for results (``--json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onerec.config import to_dict
from onerec.evaluate import EvalConfig, protocols
from onerec.io import OnerecError, read_json, write_json

BASELINE_JSON = "baseline.json"


@dataclass(frozen=True)
class EvaluationSet:
    protocol: str  # "loo" | "session"
    n_items: int
    train_sequences: list[np.ndarray]
    valid: protocols.NextItemSet | protocols.NextSessionSet
    test: protocols.NextItemSet | protocols.NextSessionSet
    max_history: int


def detect_protocol(data_dir: Path) -> str:
    """``loo`` when the data's valid/test samples are one-item leave-one-out samples, else ``session``."""
    import polars as pl

    file = Path(data_dir) / "samples.parquet"
    if not file.is_file():
        raise OnerecError(f"{data_dir}: missing samples.parquet (run `onerec data prepare`)")
    held = pl.scan_parquet(file).filter(pl.col("split") != "train").select((pl.col("session") == -1).all()).collect()
    return "loo" if held.item() else "session"


def _cap(samples: Any, n: int) -> Any:
    if n <= 0 or len(samples.history) <= n:
        return samples
    if isinstance(samples, protocols.NextItemSet):
        return protocols.NextItemSet(samples.history[:n], samples.target[:n])
    return protocols.NextSessionSet(samples.history[:n], samples.positives[:n])


def evaluation_set(data_dir: Path, cfg: EvalConfig) -> EvaluationSet:
    """Training sequences and valid/test samples of a data directory under ``cfg``'s protocol."""
    from onerec.evaluate import datasets

    protocol = detect_protocol(data_dir) if cfg.protocol == "auto" else cfg.protocol
    n = cfg.history_len(protocol)
    if protocol == "loo":
        loo = datasets.loo_from_data(data_dir, n)
        train, n_items, valid, test = loo.train_sequences, loo.n_items, loo.valid, loo.test
    else:
        train, n_items = datasets.session_train_sequences(data_dir)
        valid = datasets.next_session_from_data(data_dir, "valid", n)
        test = datasets.next_session_from_data(data_dir, "test", n)
    return EvaluationSet(protocol, n_items, train, _cap(valid, cfg.max_samples), _cap(test, cfg.max_samples), n)


def score(recommend: protocols.Recommender, evset: EvaluationSet, split: str, cfg: EvalConfig,
          name: str = "", values: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """The protocol's metrics of ``recommend`` on ``split`` of ``evset``; a progress bar ``"{name} {split}"``
    on stderr unless ``eval.progress = false``; ``values`` receives the per-sample values."""
    samples = evset.valid if split == "valid" else evset.test
    bar = {"progress": cfg.progress, "desc": f"{name} {split}".strip(), "values": values}
    if evset.protocol == "loo":
        return protocols.evaluate_next_item(recommend, samples, cfg.ks("loo"), batch_size=cfg.batch_size, **bar)
    return protocols.evaluate_next_session(recommend, samples, cfg.m, cfg.ks("session"), batch_size=cfg.batch_size,
                                           **bar)


def train_baseline(kind: str, data_dir: Path, out: Path, cfg: EvalConfig, sasrec_cfg: Any = None, log=print) -> dict:
    """Fit a baseline on the data's training sequences, score it on valid and test, write ``out``."""
    import torch
    from safetensors.torch import save_file

    from onerec.evaluate.baselines.popularity import Popularity
    from onerec.io import atomic_dir

    torch.set_num_threads(cfg.threads)
    evset = evaluation_set(Path(data_dir), cfg)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"kind": kind, "data": str(Path(data_dir).resolve()), "protocol": evset.protocol,
                            "max_history": evset.max_history, "n_items": evset.n_items, "eval_config": to_dict(cfg)}
    if kind == "popularity":
        model = Popularity.fit(evset.train_sequences, evset.n_items)
        recommend = model
        tensors = {"counts": torch.from_numpy(model.counts)}
        weights = "popularity.safetensors"
        info["train_seconds"] = time.perf_counter() - t0
    elif kind == "sasrec":
        from onerec.evaluate.baselines import sasrec

        sasrec_cfg = sasrec_cfg or sasrec.SASRecConfig()
        rng = np.random.default_rng(12345)
        sub_idx = np.sort(rng.choice(len(evset.valid.history), size=min(5000, len(evset.valid.history)), replace=False))
        sub = EvaluationSet(evset.protocol, evset.n_items, [], _subset(evset.valid, sub_idx), evset.test, evset.max_history)
        net, summary = sasrec.fit(
            evset.train_sequences, evset.n_items, sasrec_cfg,
            validate=lambda rec: score(rec, sub, "valid", cfg, "sasrec")["ndcg@10"],
            log=lambda row: log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())),
        )
        recommend = sasrec.SASRecRecommender(net)
        tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
        weights = "model.safetensors"
        info.update(config=to_dict(sasrec_cfg), train_seconds=summary["train_seconds"], epochs_run=summary["epochs_run"],
                    best_epoch=summary["best_epoch"], history=summary["history"])
    else:
        raise OnerecError(f"unknown baseline {kind!r} (popularity | sasrec)")
    info["valid"] = score(recommend, evset, "valid", cfg, kind)
    info["test"] = score(recommend, evset, "test", cfg, kind)
    with atomic_dir(Path(out)) as tmp:
        save_file(tensors, str(tmp / weights))
        write_json(tmp / BASELINE_JSON, info)
    return info


def _subset(samples: Any, idx: np.ndarray) -> Any:
    if isinstance(samples, protocols.NextItemSet):
        return protocols.NextItemSet(samples.history[idx], samples.target[idx])
    return protocols.NextSessionSet(samples.history[idx], [samples.positives[i] for i in idx])


def load_baseline(path: Path) -> tuple[protocols.Recommender, dict]:
    """The recommender stored in a baseline directory and its ``baseline.json``."""
    from safetensors.torch import load_file

    path = Path(path)
    info = read_json(path / BASELINE_JSON)
    if info.get("kind") == "popularity":
        from onerec.evaluate.baselines.popularity import Popularity

        return Popularity(load_file(str(path / "popularity.safetensors"))["counts"].numpy()), info
    if info.get("kind") == "sasrec":
        from onerec.config import from_dict
        from onerec.evaluate.baselines import sasrec

        net = sasrec.SASRec(int(info["n_items"]), from_dict(sasrec.SASRecConfig, info["config"], "sasrec"))
        net.load_state_dict(load_file(str(path / "model.safetensors")))
        return sasrec.SASRecRecommender(net), info
    raise OnerecError(f"{path / BASELINE_JSON}: unknown baseline kind {info.get('kind')!r}")


BASELINE_NAMES = {"popularity": "popularity", "sasrec": "sasrec_ce"}


def generative_recommender(model: Any, protocol: str, cfg: EvalConfig) -> Any:
    """The run's model behind the harness's ``recommend`` door, with ``cfg``'s beam settings. An item-wise model
    (max_session_items = 1, TIGER-style) answers a next-session request like the baselines: its ranked next items,
    the first m of them the session (EVAL.md §2)."""
    from onerec.evaluate.generative import GenerativeRecommender

    item_wise = int(model.config.max_session_items) == 1
    m = 1 if protocol == "loo" or item_wise or cfg.next_item_lists else cfg.m
    if cfg.beam_size < max(cfg.ks(protocol)) and protocol == "loo":
        raise OnerecError(f"eval.beam_size={cfg.beam_size} < K={max(cfg.ks('loo'))}: beam search cannot return K items")
    return GenerativeRecommender(model, cfg.beam_size, m, spread=cfg.spread_beams, order=cfg.union_order,
                                 joint_top=cfg.spread_top == "joint")


def evaluate_run(run: Path, cfg: EvalConfig, baselines: list[Path] = (), data: Path | None = None, log=print) -> dict:
    """Score the run's model and each baseline on the same evaluation set; write ``RUN/metrics.json`` and the
    per-sample values ``RUN/per_sample.parquet`` (with ``eval.bootstrap`` > 0, metrics.json's ``uncertainty``
    holds each figure's 95 % bootstrap interval and each baseline's paired difference from onerec)."""
    import torch

    from onerec.checkpoint import load_run
    from onerec.evaluate import compare
    from onerec.evaluate.baselines.popularity import Popularity

    torch.set_num_threads(cfg.threads)
    run = Path(run)
    model, info = load_run(run)
    if cfg.copy_gate_bias is not None:
        model.set_copy_gate_bias(cfg.copy_gate_bias)
    if cfg.item_head_weight is not None:
        model.set_item_head_weight(cfg.item_head_weight)
    data_dir = Path(data or info.get("data") or "")
    if not (data_dir / "samples.parquet").is_file():
        raise OnerecError(f"{run / 'run.json'}: data directory {data_dir} has no samples.parquet (pass --data)")
    loaded = [load_baseline(path) for path in baselines]  # check them all before any long scoring
    for path, (_, binfo) in zip(baselines, loaded):
        if Path(binfo["data"]).resolve() != data_dir.resolve():
            raise OnerecError(f"{path}: baseline trained on {binfo['data']}, the run is evaluated on {data_dir}")
    evset = evaluation_set(data_dir, cfg)
    if evset.n_items != int(info["n_items"]):
        raise OnerecError(f"{data_dir}: {evset.n_items} items but the run {run} was trained on {info['n_items']}")
    item_wise = int(model.config.max_session_items) == 1
    t0 = time.perf_counter()
    gen = generative_recommender(model, evset.protocol, cfg)
    m = gen.m
    samples = evset.valid if cfg.split == "valid" else evset.test
    result: dict[str, Any] = {
        "protocol": evset.protocol, "split": cfg.split, "data": str(data_dir.resolve()),
        "n_samples": len(samples.history), "max_history": evset.max_history,
        "m": m, "beam_size": cfg.beam_size, "fingerprint": compare.fingerprint(samples),
        "generation": ("item-wise" if item_wise else "next-item lists (diagnostic)" if cfg.next_item_lists
                       and evset.protocol == "session" else "next-item" if m == 1 else "session"),
        "eval_config": to_dict(cfg), "models": {},
    }
    per_sample: dict[str, dict[str, np.ndarray]] = {name: {} for name in ("onerec", "popularity")}
    result["models"]["onerec"] = (score(gen, evset, cfg.split, cfg, "onerec", per_sample["onerec"]) | gen.health()
                                  | {"eval_seconds": time.perf_counter() - t0})
    log(f"onerec: {result['models']['onerec']}")
    result["models"]["popularity"] = score(Popularity.fit(evset.train_sequences, evset.n_items), evset, cfg.split, cfg,
                                           "popularity", per_sample["popularity"]) | {"source": "popularity"}
    for path, (recommend, binfo) in zip(baselines, loaded):
        name = BASELINE_NAMES.get(binfo["kind"], binfo["kind"])
        per_sample[name] = {}
        result["models"][name] = (score(recommend, evset, cfg.split, cfg, name, per_sample[name])
                                  | {"train_seconds": binfo.get("train_seconds"), "source": str(Path(path).resolve())})
        log(f"{name}: {result['models'][name]}")
    if cfg.bootstrap:
        result["uncertainty"] = {"method": "percentile bootstrap over samples, paired for differences",
                                 "n_boot": cfg.bootstrap, "seed": cfg.bootstrap_seed,
                                 "models": compare.intervals(per_sample, cfg.bootstrap, cfg.bootstrap_seed)}
    compare.write_per_sample(run / compare.PER_SAMPLE, per_sample)
    write_json(run / "metrics.json", result)
    return result
