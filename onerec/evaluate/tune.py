"""``onerec tune``: choose a decoding knob of a trained run on the validation split, optionally keep it.

Design choices
- Knobs are inference-time settings that change the ranking but not the weights: ``item_head_weight`` (the item
  head's weight in beam search, ``model.item_head``) and ``copy_gate_bias`` (the copy head's gate shift). Each
  grid value is scored by the same harness as ``onerec evaluate`` (:func:`onerec.evaluate.runner.score`) on one
  validation evaluation set built once; the test split is refused, so a choice can never see test data.
- The choice is the grid value with the highest ``--metric``; ties go to the value listed first.
- ``RUN/tuning.json`` keeps every tuned knob's grid, per-value metrics and choice (one entry per knob, rewritten
  atomically). ``--apply`` also records the choice in ``run.json``'s ``decoding`` table, which
  :func:`onerec.checkpoint.load_run` applies on every load — ``onerec evaluate`` and ``onerec serve`` then decode
  with it unless ``eval.*`` / ``serve.*`` give the knob explicitly. ``model.safetensors`` is never touched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from onerec.checkpoint import DECODING_KNOBS as KNOBS  # the knobs run.json can record
from onerec.config import to_dict
from onerec.evaluate import EvalConfig
from onerec.io import OnerecError, read_json, write_json

TUNING_JSON = "tuning.json"


def parse_grid(text: str, knob: str) -> list[float]:
    """``"0,1,2.5"`` -> ``[0.0, 1.0, 2.5]``; refuses empty, non-numeric, non-finite, repeated or (for
    ``item_head_weight``) negative values with a one-line error."""
    if knob not in KNOBS:
        raise OnerecError(f"--knob {knob!r}: expected one of {', '.join(KNOBS)}")
    values: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise OnerecError(f"--grid {text!r}: {part!r} is not a number") from None
        if not math.isfinite(value) or (knob == "item_head_weight" and value < 0):
            bound = " and >= 0" if knob == "item_head_weight" else ""
            raise OnerecError(f"--grid {text!r}: {knob} values must be finite{bound}")
        if value in values:
            raise OnerecError(f"--grid {text!r}: {value:g} is listed twice")
        values.append(value)
    return values


def tune_run(run: Path, cfg: EvalConfig, knob: str, grid: list[float], metric: str = "recall@10",
             apply: bool = False, data: Path | None = None, log=print) -> dict[str, Any]:
    """Score the run at each grid value of ``knob`` on the validation split; write ``RUN/tuning.json`` (and with
    ``apply`` the run's ``decoding`` table); returns this knob's entry."""
    import torch

    from onerec.checkpoint import RUN_JSON, load_run, set_decoding_knob
    from onerec.evaluate.runner import evaluation_set, generative_recommender, score

    if cfg.split != "valid":
        raise OnerecError(f"onerec tune reads the validation split only (eval.split={cfg.split!r} given)")
    if not grid:
        raise OnerecError("onerec tune: empty --grid")
    torch.set_num_threads(cfg.threads)
    run = Path(run)
    model, info = load_run(run)
    data_dir = Path(data or info.get("data") or "")
    if not (data_dir / "samples.parquet").is_file():
        raise OnerecError(f"{run / RUN_JSON}: data directory {data_dir} has no samples.parquet (pass --data)")
    # refuse a knob the model lacks before any scoring
    for value in grid:
        set_decoding_knob(model, knob, value)
    evset = evaluation_set(data_dir, dataclasses.replace(cfg, split="valid"))
    if evset.n_items != int(info["n_items"]):
        raise OnerecError(f"{data_dir}: {evset.n_items} items but the run {run} was trained on {info['n_items']}")
    rows = []
    for value in grid:
        set_decoding_knob(model, knob, value)
        t0 = time.perf_counter()
        gen = generative_recommender(model, evset.protocol, cfg)
        metrics = score(gen, evset, "valid", cfg, f"{knob}={value:g}", {}) | gen.health()
        if metric not in metrics:
            raise OnerecError(f"--metric {metric!r}: not a metric of the {evset.protocol} protocol "
                              f"({', '.join(k for k in metrics if '@' in k)})")
        rows.append({"value": value, "metrics": metrics, "seconds": time.perf_counter() - t0})
        log(f"{knob}={value:g}: {metric} {metrics[metric]:.4f}")
    best = max(rows, key=lambda r: r["metrics"][metric])  # max keeps the first of equal values: grid order
    entry = {"knob": knob, "metric": metric, "split": "valid", "protocol": evset.protocol,
             "n_samples": len(evset.valid.history), "data": str(data_dir.resolve()), "grid": grid, "results": rows,
             "best": best["value"], "best_metric": best["metrics"][metric], "applied": apply,
             "eval_config": to_dict(cfg)}
    path = run / TUNING_JSON
    tuning = read_json(path) if path.is_file() else {}
    write_json(path, tuning | {knob: entry})
    if apply:
        info = read_json(run / RUN_JSON)  # as written by training (load_run's copy may be normalised)
        info["decoding"] = {**info.get("decoding", {}), knob: best["value"]}
        write_json(run / RUN_JSON, info)
    return entry


def tune(
    run: Path, knob: str, grid: str, metric: str, apply: bool, data: Path | None, config: Path | None,
    set_: list[str], log=print,
) -> dict[str, Any]:
    """The CLI's body: config + overrides, then :func:`tune_run`."""
    from onerec.config import load_section

    cfg = load_section(EvalConfig, "eval", config, ["eval.split=valid", *set_])
    return tune_run(run, cfg, knob, parse_grid(grid, knob), metric, apply, data, log)


__all__ = ["KNOBS", "TUNING_JSON", "parse_grid", "tune_run", "tune"]
