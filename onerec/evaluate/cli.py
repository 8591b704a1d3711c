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
        for name, metrics in result["models"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "@" in k)
            typer.echo(f"{name}: {shown}")
        typer.echo(f"wrote {run / 'metrics.json'}")


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
