"""``onerec simulate``: generate a world (no subcommand) or judge sessions in one (``judge``).

Design choices
- ``onerec simulate --out DIR [--users U --items I --days D --seed S --from KUAIRAND_DIR]`` reads the
  ``[simulate]`` table of ``--config`` (and ``--set simulate.key=value``), then the flags on top.
- ``onerec simulate judge --world DIR --sessions FILE`` reads sessions from Parquet or JSON lines with
  columns ``user_id`` (int), ``video_ids`` (list of ints, the world's ids) and optionally ``day`` (int; else
  ``--day``, default the day after the log), prints the mean of every judge output as JSON and, with
  ``--out FILE.parquet``, writes one row per session.
- numpy / polars are imported inside the commands so ``onerec --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Simulated KuaiRand-format world with a ground-truth judge.", add_completion=False)


@app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(None, "--out", help="Output world directory (replaced atomically)."),
    users: Optional[int] = typer.Option(None, "--users", help="Number of users."),
    items: Optional[int] = typer.Option(None, "--items", help="Number of videos."),
    days: Optional[int] = typer.Option(None, "--days", help="Number of days of logs."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    from_path: Optional[Path] = typer.Option(None, "--from", help="KuaiRand-Pure directory: use its real features."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with a \\[simulate] table."),
    overrides: list[str] = typer.Option([], "--set", help="Override: simulate.key=value (repeatable)."),
) -> None:
    """Generate a world: KuaiRand-layout logs, feature tables, world.json + world.safetensors."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from onerec.config import load_section
    from onerec.io import OnerecError
    from onerec.simulate.config import SimulateConfig
    from onerec.simulate.writer import generate

    if out is None:
        raise OnerecError("onerec simulate: --out DIR is required")
    cfg = load_section(SimulateConfig, "simulate", config, overrides)
    flags = {"users": users, "items": items, "days": days, "seed": seed, "from_path": from_path}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    summary = generate(cfg, out, progress=True)
    typer.echo(format_summary(summary))
    typer.echo(f"wrote {out}")


def format_summary(summary: dict) -> str:
    """The calibration table and the high-quality session share as readable text."""
    lines = [f"{summary['users']:,} users x {summary['items']:,} items x {summary['days']} days: "
             f"{summary['rows']:,} impressions in {summary['requests']:,} requests "
             f"({summary['seconds']['total']:.1f} s)",
             f"{'rate':<10} {'simulated':>10} {'target':>10} {'real':>10} {'rel.err':>8}"]
    for key, row in summary["rates"].items():
        lines.append(f"{key:<10} {row['simulated']:>10.4f} {row['target']:>10.4f} {row['real_kuairand_pure']:>10.4f} "
                     f"{row['relative_error']:>+8.1%}")
    hq = summary["high_quality"]
    lines.append(f"high-quality requests ({hq['rule']}): {hq['requests']:,} = {hq['request_share']:.1%}; "
                 f"user-days with one: {hq['user_day_share']:.1%}")
    return "\n".join(lines)


def read_sessions(path: Path):  # noqa: ANN201 - returns a polars DataFrame (imported lazily)
    """Sessions file (Parquet or JSON lines) with ``user_id``, ``video_ids`` and optional ``day``."""
    import polars as pl

    from onerec.io import OnerecError

    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"sessions file not found: {path}")
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        frame = pl.read_ndjson(path)
    else:
        raise OnerecError(f"{path}: sessions must be .parquet or .jsonl, got {path.suffix or 'no suffix'}")
    for col in ("user_id", "video_ids"):
        if col not in frame.columns:
            raise OnerecError(f"{path}: missing column {col} (have {', '.join(frame.columns)})")
    lengths = frame["video_ids"].list.len()
    if frame.height == 0 or int(lengths.min()) == 0:
        raise OnerecError(f"{path}: {int((lengths == 0).sum()) if frame.height else 0} empty sessions "
                          f"({frame.height} rows); every session needs at least one video")
    return frame


def judge_frame(world, frame, day: int):  # noqa: ANN001, ANN201
    """Judge every session of ``frame``; sessions of equal length and day are scored together."""
    import numpy as np
    import polars as pl

    days = frame["day"].to_numpy() if "day" in frame.columns else np.full(frame.height, day)
    lengths = frame["video_ids"].list.len().to_numpy()
    users = frame["user_id"].to_numpy().astype(np.int64)
    lists = frame["video_ids"].to_list()
    results: dict[str, np.ndarray] = {}
    for d, m in sorted(set(zip(days.tolist(), lengths.tolist()))):
        rows = np.flatnonzero((days == d) & (lengths == m))
        items = np.array([lists[r] for r in rows], dtype=np.int64)
        scores = world.expected_reward(users[rows], items, int(d))
        for key, value in scores.items():
            results.setdefault(key, np.zeros(frame.height))[rows] = value
    return frame.with_columns(pl.Series("day", days.astype(np.int64)),
                              *[pl.Series(k, v) for k, v in results.items()])


@app.command("judge")
def judge(
    world_dir: Path = typer.Option(..., "--world", help="World directory written by `onerec simulate`."),
    sessions: Path = typer.Option(..., "--sessions", help="Parquet / JSON lines: user_id, video_ids[, day]."),
    day: Optional[int] = typer.Option(None, "--day", help="Day index for sessions without one (default: after the log)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write per-session scores here (Parquet)."),
) -> None:
    """True expected outcomes (swt, vtr, wtr, ltr, ctr, cmtr, shtr, reward) of each session."""
    from onerec.io import atomic_path
    from onerec.simulate.judge import QUADRATURE_NODES
    from onerec.simulate.world import World

    world = World.load(world_dir)
    frame = read_sessions(sessions)
    scored = judge_frame(world, frame, world.config.days if day is None else day)
    if out is not None:
        with atomic_path(Path(out)) as tmp:
            scored.write_parquet(tmp)
    keys = ["swt", "vtr", "wtr", "ltr", "ctr", "cmtr", "shtr", "reward"]
    report = {"sessions": scored.height, "method": f"exact, {QUADRATURE_NODES}-node Gauss-Hermite over the request mood",
              **{f"mean_{k}": float(scored[k].mean()) for k in keys}}
    typer.echo(json.dumps(report, indent=2))
