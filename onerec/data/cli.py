"""``onerec data ...`` commands (typer sub-app ``data``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Data stage: canonical tables, sessions, samples and splits from a real log.",
                  no_args_is_help=True)


def format_summary(summary: dict[str, Any]) -> str:
    """A readable multi-line view of ``summary.json``."""
    s = summary
    ses = s["sessions"]
    lines = [
        f"source {s['source']}: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions "
        f"({s['positives']:,} positive; {s['prior_positives']:,} prior-history positives)",
        f"time {s['time_range']['first']} .. {s['time_range']['last']}",
        "quirks: " + ", ".join(f"{k}={v:,}" for k, v in s["quirks"].items() if v),
        (f"sessions ({s['session_mode']}): built {ses['built']:,}, high quality {ses['kept']:,}; removed in order "
         + ", ".join(f"{k} {v:,}" for k, v in ses["removed_in_order"].items())
         + (f"; skipped rules {ses['skipped_rules']}" if ses["skipped_rules"] else ""))
        if s["session_mode"] != "positives" else "sessions: none (samples are windows of the next positives)",
        f"samples ({s['split']}): " + ", ".join(f"{k} {s['samples'][k]:,}" for k in ("train", "valid", "test"))
        + f" (train high quality {s['samples']['train_high_quality']:,}; with a positive target: "
        + ", ".join(f"{k} {v:,}" for k, v in s["samples"]["with_positive_target"].items()) + ")",
        f"wrote in {s.get('seconds', 0):.1f}s",
    ]
    return "\n".join(lines)


@app.command("prepare")
def prepare_cmd(
    source: str = typer.Option(None, "--source", help="kuairand | amazon | movielens | csv (default: config)"),
    input: Path = typer.Option(None, "--input", help="dataset folder (default: data.input of the config)"),
    out: Path = typer.Option(..., "--out", help="data directory to write"),
    config: Path = typer.Option(None, "--config", help="TOML file with a \\[data] table"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. data.session_gap_s=600"),
) -> None:
    """Read a dataset in its official layout and write the canonical tables, samples and summary.json."""
    from onerec.config import ConfigError, load_section
    from onerec.data.config import DataConfig
    from onerec.data.prepare import prepare

    overrides = list(set_)
    if source:
        overrides.append(f'data.source="{source}"')
    if input:
        overrides.append(f'data.input="{input}"')
    cfg = load_section(DataConfig, "data", config, overrides)
    if not cfg.input:
        raise ConfigError("no input folder: pass --input or set data.input")
    summary = prepare(cfg, Path(cfg.input), out, echo=typer.echo)
    typer.echo(format_summary(summary))
    typer.echo(f"data directory: {out}")
