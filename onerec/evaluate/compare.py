"""Uncertainty of evaluation figures: bootstrap intervals, paired comparisons, ``onerec compare``.

Design choices
- Every figure the harness reports is a mean of per-sample values (``protocols.evaluate_*(values=...)``).
  ``onerec evaluate`` keeps those values in ``RUN/per_sample.parquet`` (one column ``"{model}/{metric}"``
  per model and metric, one row per evaluated sample, in the evaluation set's order) next to
  ``metrics.json``, so two models can be compared *paired*, sample by sample, long after they were scored.
- Interval of a mean: the percentile bootstrap over samples (``n_boot`` resamples, explicit seed, so the
  same inputs give the same interval). Paired difference ``b - a``: the same bootstrap on the per-sample
  differences, plus a two-sided p-value from the normal approximation of the paired mean difference
  (``erfc(|mean| / (sd / sqrt(n)) / sqrt(2))``; n is in the thousands here). A comparison is only paired
  when both runs scored the same samples: the evaluation set's fingerprint (sha256 of its histories and
  targets) must match, else :func:`compare_runs` refuses.
- NaN values (a sample a metric is undefined for) are dropped pairwise.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from onerec.io import OnerecError, atomic_path, read_json

PER_SAMPLE = "per_sample.parquet"


def fingerprint(samples: Any) -> str:
    """sha256 of an evaluation set's samples (histories plus targets or positive sets)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(samples.history, dtype=np.int64).tobytes())
    if hasattr(samples, "target"):
        h.update(np.ascontiguousarray(samples.target, dtype=np.int64).tobytes())
    else:
        for pos in samples.positives:
            h.update(np.int64(len(pos)).tobytes())
            h.update(np.ascontiguousarray(pos, dtype=np.int64).tobytes())
    return h.hexdigest()


def _resample_means(values: np.ndarray, n_boot: int, seed: int, chunk: int = 64) -> np.ndarray:
    """(n_boot,) means of ``values`` over bootstrap resamples drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        out[start : start + size] = values[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return out


def mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NaN dropped); (nan, nan) when empty."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    means = _resample_means(values, n_boot, seed)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Paired comparison of per-sample values ``b`` against ``a`` (same samples, same order).

    Returns ``{"a", "b", "diff", "rel", "ci", "p_value", "n"}``: the two means, ``b - a``, ``(b - a) / a``, the
    bootstrap interval of ``b - a`` and the two-sided p-value of a zero mean difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise OnerecError(f"paired values differ in length ({a.shape[0]} vs {b.shape[0]}): not the same samples")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = b - a
    n = int(d.size)
    if n == 0:
        return {"a": float("nan"), "b": float("nan"), "diff": float("nan"), "rel": float("nan"),
                "ci": [float("nan"), float("nan")], "p_value": float("nan"), "n": 0}
    lo, hi = mean_ci(d, n_boot, seed, level)
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        p = 1.0 if float(d.mean()) == 0.0 else 0.0
    else:
        p = math.erfc(abs(float(d.mean())) / (sd / math.sqrt(n)) / math.sqrt(2.0))
    mean_a = float(a.mean())
    return {"a": mean_a, "b": float(b.mean()), "diff": float(d.mean()),
            "rel": float(d.mean()) / mean_a if mean_a else float("nan"), "ci": [lo, hi], "p_value": p, "n": n}


def write_per_sample(path: Path, per_model: dict[str, dict[str, np.ndarray]]) -> None:
    """Write ``{model: {metric: (n,) values}}`` as one Parquet table (columns ``model/metric``), atomically."""
    import polars as pl

    columns = {f"{model}/{metric}": np.asarray(v, dtype=np.float64)
               for model, vals in per_model.items() for metric, v in vals.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise OnerecError(f"per-sample columns differ in length: {sorted(lengths)}")
    with atomic_path(Path(path)) as tmp:
        pl.DataFrame(columns).write_parquet(tmp)


def read_per_sample(run: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({model: {metric: values}}, metrics.json)`` of a run evaluated by ``onerec evaluate``."""
    import polars as pl

    run = Path(run)
    file, meta = run / PER_SAMPLE, run / "metrics.json"
    if not file.is_file() or not meta.is_file():
        raise OnerecError(f"{run}: no {PER_SAMPLE} / metrics.json (run `onerec evaluate --run {run}` first)")
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, col in pl.read_parquet(file).to_dict().items():
        model, _, metric = name.partition("/")
        out.setdefault(model, {})[metric] = col.to_numpy().astype(np.float64)
    return out, read_json(meta)


def _pick(per: dict[str, dict[str, np.ndarray]], model: str, run: Path) -> dict[str, np.ndarray]:
    if model not in per:
        raise OnerecError(f"{run}: no model {model!r} in {PER_SAMPLE} (it has {', '.join(sorted(per))})")
    return per[model]


def compare_runs(run_a: Path, run_b: Path, model_a: str = "onerec", model_b: str = "onerec",
                 n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of ``model_b`` in ``run_b`` against ``model_a`` in ``run_a`` on every shared metric.

    Refuses runs scored on different samples (fingerprint, split or protocol differ)."""
    per_a, meta_a = read_per_sample(run_a)
    per_b, meta_b = read_per_sample(run_b)
    for key in ("protocol", "split", "fingerprint"):
        if meta_a.get(key) != meta_b.get(key):
            raise OnerecError(f"{run_a} and {run_b} were scored on different samples ({key}: "
                              f"{meta_a.get(key)!r} vs {meta_b.get(key)!r}); re-evaluate both with the same settings")
    vals_a, vals_b = _pick(per_a, model_a, Path(run_a)), _pick(per_b, model_b, Path(run_b))
    shared = [m for m in vals_a if m in vals_b]
    return {"a": f"{run_a}:{model_a}", "b": f"{run_b}:{model_b}", "split": meta_a.get("split"),
            "n_boot": n_boot, "seed": seed,
            "metrics": {m: paired(vals_a[m], vals_b[m], n_boot, seed) for m in shared}}


def intervals(per_model: dict[str, dict[str, np.ndarray]], n_boot: int, seed: int,
              reference: str = "onerec") -> dict[str, dict[str, Any]]:
    """For ``metrics.json``: each model's 95 % interval per metric and, for every other model, its paired
    difference against ``reference`` (``{model: {"ci95": {...}, "vs_<reference>": {...}}}``)."""
    out: dict[str, dict[str, Any]] = {}
    for model, vals in per_model.items():
        entry: dict[str, Any] = {"ci95": {m: list(mean_ci(v, n_boot, seed)) for m, v in vals.items()}}
        if model != reference and reference in per_model:
            ref = per_model[reference]
            entry[f"vs_{reference}"] = {m: paired(ref[m], v, n_boot, seed) for m, v in vals.items() if m in ref}
        out[model] = entry
    return out


def seed_summary(runs: list[Path], reference: str = "onerec") -> dict[str, Any]:
    """Across-seed table of evaluated runs (one per seed, each ``onerec evaluate``-d with its baselines).

    Per model present in every run and per metric: the values of its distinct trained models (a baseline
    directory scored in several runs, by its ``source``, or popularity, counts once), their mean and sample
    standard deviation (``ddof=1``; 0 for one value). Every other model also gets its relative difference from
    ``reference`` *within* each run (so seed s of a baseline is paired with seed s of the model), as mean
    and standard deviation over runs. Refuses runs scored on different samples (fingerprint, split,
    protocol), like :func:`compare_runs`."""
    if not runs:
        raise OnerecError("seed_summary needs at least one evaluated run")
    metas = []
    for run in runs:
        meta = Path(run) / "metrics.json"
        if not meta.is_file():
            raise OnerecError(f"{run}: no metrics.json (run `onerec evaluate --run {run}` first)")
        metas.append(read_json(meta))
    for key in ("protocol", "split", "fingerprint"):
        seen = {str(m.get(key)) for m in metas}
        if len(seen) > 1:
            raise OnerecError(f"the runs were scored on different samples ({key}: {', '.join(sorted(seen))}); "
                              "re-evaluate them with the same data and settings")
    models = [name for name in metas[0]["models"] if all(name in m["models"] for m in metas)]
    table: dict[str, dict[str, Any]] = {}
    for name in models:
        per_run = [m["models"][name] for m in metas]
        # one trained model scored in several runs (the same baseline directory) counts once
        legacy = "popularity" if name == "popularity" else None  # no seed: one model per data set
        sources = [str(r.get("source", legacy or f"{run}:{name}")) for r, run in zip(per_run, runs)]
        first = [sources.index(src) for src in dict.fromkeys(sources)]
        metrics = [k for k, v in per_run[0].items()
                   if "@" in k and isinstance(v, float) and all(isinstance(r.get(k), float) for r in per_run)]
        entry: dict[str, Any] = {"distinct": len(first)}
        for metric in metrics:
            vals = np.array([per_run[i][metric] for i in first], dtype=np.float64)
            row: dict[str, Any] = {"values": vals.tolist(), "mean": float(vals.mean()),
                                   "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
            if name != reference and reference in models:
                ref = np.array([m["models"][reference].get(metric, np.nan) for m in metas], dtype=np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.array([r[metric] for r in per_run], dtype=np.float64) / ref - 1.0
                if np.isfinite(rel).all():
                    row[f"rel_vs_{reference}"] = {"mean": float(rel.mean()),
                                                  "std": float(rel.std(ddof=1)) if len(rel) > 1 else 0.0}
            entry[metric] = row
        table[name] = entry
    return {"runs": [str(r) for r in runs], "n_runs": len(runs), "split": metas[0].get("split"),
            "protocol": metas[0].get("protocol"), "fingerprint": metas[0].get("fingerprint"),
            "n_samples": metas[0].get("n_samples"), "reference": reference, "models": table}


def seed_table_markdown(summary: dict[str, Any], metrics: list[str] | None = None) -> str:
    """The summary as a Markdown table: ``mean ± std`` per model and metric, and the seed count."""
    names = list(summary["models"])
    if metrics is None:
        metrics = [k for k in summary["models"][names[0]] if "@" in k] if names else []
    ref = summary["reference"]
    lines = ["| model | " + " | ".join(metrics) + f" | recall vs {ref} (paired by run) | distinct models |",
             "|---" * (len(metrics) + 3) + "|"]
    for name in names:
        entry = summary["models"][name]
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" if m in entry else "-" for m in metrics]
        key = next((m for m in metrics if m.startswith("recall@") and f"rel_vs_{ref}" in entry.get(m, {})), None)
        rel = (f"{key}: {entry[key][f'rel_vs_{ref}']['mean']:+.1%} ± {entry[key][f'rel_vs_{ref}']['std']:.1%}"
               if key else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {rel} | {entry['distinct']} |")
    return "\n".join(lines)
