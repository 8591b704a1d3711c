"""``onerec train``: the typer shell over :func:`onerec.train.train_command` (torch is imported inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train(
    data: Path = typer.Option(..., "--data", help="data directory (samples.parquet, sessions.parquet, items.parquet)"),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="tokenizer directory (codes.parquet, tokenizer.json)"),
    out: Path = typer.Option(..., "--out", help="run directory to write (or to continue with --resume)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with \\[model] and \\[train] tables"),
    emb: Optional[Path] = typer.Option(None, "--emb", help="item embeddings directory (embeddings.safetensors)"),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable"),
    resume: bool = typer.Option(False, "--resume", help="continue RUN exactly from RUN/state"),
) -> None:
    """Train the seed model. Runs alone or under `torchrun --nproc_per_node=N` (DDP or FSDP2: train.strategy)."""
    from onerec.train import train_command

    info = train_command(data, tokenizer, config, out, emb, tuple(overrides), resume)
    from onerec.dist import env_rank_world

    if env_rank_world()[0] == 0:
        chosen = [k for k in info if k.startswith("best_val_") and k != "best_val_ntp_loss"]
        kept = f"best val {chosen[0][9:]} {info[chosen[0]]:.4f}, " if chosen else "best "
        typer.echo(f"{out}: {info['steps']} steps, {kept}val NTP loss {info.get('best_val_ntp_loss')} "
                   f"(kept weights of step {info.get('best_step')})")
