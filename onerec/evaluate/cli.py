"""``onerec evaluate`` and ``onerec baseline``: thin shells over :mod:`onerec.evaluate.runner`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def evaluate(
    run: Path = typer.Option(..., "--run", help="run directory written by `onerec train`"),
    data: Path = typer.Option(None, "--data", help="data directory (default: the run's, from run.json)"),
    baseline: list[Path] = typer.Option([], "--baseline", help="baseline directory (`onerec baseline`), repeatable"),
    config: Path = typer.Option(None, "--config", help="TOML file with an \\[eval] table"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. eval.beam_size=64"),
    as_json: bool = typer.Option(False, "--json", help="print RUN/metrics.json to stdout"),
) -> None:
    """Score the run's model, popularity and the given baselines on the same split; write RUN/metrics.json."""
    from onerec.config import load_section
    from onerec.evaluate import EvalConfig
    from onerec.evaluate.runner import evaluate_run

    cfg = load_section(EvalConfig, "eval", config, set_)
    result = evaluate_run(run, cfg, list(baseline), data, log=lambda msg: typer.echo(msg, err=True))
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        ci = result.get("uncertainty", {}).get("models", {})
        for name, metrics in result["models"].items():
            low_high = ci.get(name, {}).get("ci95", {})
            shown = ", ".join(f"{k} {v:.4f}" + (" [{:.4f}, {:.4f}]".format(*low_high[k]) if k in low_high else "")
                              for k, v in metrics.items() if isinstance(v, float) and "@" in k)
            typer.echo(f"{name}: {shown}")
        typer.echo(f"wrote {run / 'metrics.json'} and {run / 'per_sample.parquet'}")


def tune(
    run: Path = typer.Option(..., "--run", help="run directory written by `onerec train`"),
    knob: str = typer.Option("item_head_weight", "--knob", help="item_head_weight | copy_gate_bias"),
    grid: str = typer.Option(..., "--grid", help="comma-separated values to score, e.g. 0,1,2,3,5,10"),
    metric: str = typer.Option("recall@10", "--metric", help="validation metric to maximise"),
    apply: bool = typer.Option(False, "--apply", help="record the choice in RUN/run.json (evaluate and serve use it)"),
    data: Path = typer.Option(None, "--data", help="data directory (default: the run's, from run.json)"),
    config: Path = typer.Option(None, "--config", help="TOML file with an \\[eval] table (its split is ignored)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. eval.max_samples=4096"),
    as_json: bool = typer.Option(False, "--json", help="print this knob's tuning entry as JSON"),
) -> None:
    """Choose a decoding knob on the validation split (never test): score each grid value, write RUN/tuning.json."""
    from onerec.evaluate.tune import tune as tune_run

    entry = tune_run(run, knob, grid, metric, apply, data, config, list(set_),
                     log=lambda msg: typer.echo(msg, err=True))
    if as_json:
        typer.echo(json.dumps(entry, indent=2, sort_keys=True))
        return
    typer.echo(f"{knob} on {entry['n_samples']} validation samples ({metric}):")
    for row in entry["results"]:
        mark = "  <- best" if row["value"] == entry["best"] else ""
        typer.echo(f"  {row['value']:>8g}  {row['metrics'][metric]:.4f}{mark}")
    typer.echo(f"wrote {run / 'tuning.json'}" + (f"; {knob} = {entry['best']:g} recorded in {run / 'run.json'}"
                                                  if apply else ""))


def compare(
    run_a: Path = typer.Option(..., "--a", help="run evaluated by `onerec evaluate` (the reference)"),
    run_b: Path = typer.Option(..., "--b", help="run evaluated on the same samples (the candidate)"),
    model_a: str = typer.Option("onerec", "--model-a", help="model of run A (onerec, popularity, sasrec_ce ...)"),
    model_b: str = typer.Option("onerec", "--model-b", help="model of run B"),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
) -> None:
    """Paired comparison of two evaluated runs on the same samples: B - A per metric, 95 % bootstrap
    interval, p-value."""
    from onerec.evaluate.compare import compare_runs

    result = compare_runs(run_a, run_b, model_a, model_b, n_boot, seed)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(f"B = {result['b']}\nA = {result['a']}\n{result['split']} split, paired over "
               f"{next(iter(result['metrics'].values()))['n'] if result['metrics'] else 0} samples")
    typer.echo(f"{'metric':<20} {'A':>8} {'B':>8} {'B - A':>9} {'rel':>8} {'95% CI of B - A':>22} {'p':>7}")
    for name, r in result["metrics"].items():
        typer.echo(f"{name:<20} {r['a']:>8.4f} {r['b']:>8.4f} {r['diff']:>+9.4f} {r['rel']:>+8.1%} "
                   f"{'[{:+.4f}, {:+.4f}]'.format(*r['ci']):>22} {r['p_value']:>7.3f}")


def seeds(
    run: list[Path] = typer.Option(..., "--run", help="evaluated run, one per seed (repeat --run)"),
    reference: str = typer.Option("onerec", "--reference", help="model the others are compared with"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Across-seed table of evaluated runs: mean ± sample std per model and metric, and each baseline's
    relative difference from the reference paired by run (seed)."""
    from onerec.evaluate.compare import seed_summary, seed_table_markdown

    summary = seed_summary(list(run), reference)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    typer.echo(f"{summary['split']} split, {summary['n_samples']} samples, {summary['n_runs']} runs")
    typer.echo(seed_table_markdown(summary))


def baseline(
    kind: str = typer.Argument(..., help="popularity | sasrec"),
    data: Path = typer.Option(..., "--data", help="data directory (`onerec data prepare`)"),
    out: Path = typer.Option(..., "--out", help="baseline directory to write"),
    config: Path = typer.Option(None, "--config", help="TOML file with \\[eval] and \\[sasrec] tables"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. sasrec.dropout=0.5"),
) -> None:
    """Train a baseline on the data's training split (model selection on validation) and score it."""
    from onerec.config import load_section
    from onerec.evaluate import EvalConfig
    from onerec.evaluate.runner import train_baseline

    cfg = load_section(EvalConfig, "eval", config, [s for s in set_ if not s.startswith("sasrec.")])
    sasrec_cfg = None
    if kind == "sasrec":
        from onerec.evaluate.baselines.sasrec import SASRecConfig

        sasrec_cfg = load_section(SASRecConfig, "sasrec", config, [s for s in set_ if s.startswith("sasrec.")])
    info = train_baseline(kind, data, out, cfg, sasrec_cfg, log=lambda msg: typer.echo(msg, err=True))
    for split in ("valid", "test"):
        typer.echo(f"{kind} {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in info[split].items() if "@" in k))
    typer.echo(f"wrote {out}")
