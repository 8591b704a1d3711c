"""``onerec align`` (DPO rounds) and ``onerec sample-server`` (the DPO sampling server)."""

from __future__ import annotations

from pathlib import Path

import typer


def align_command(
    run: Path = typer.Option(..., "--run", "--seed-run",
                             help="seed run directory (M_0), written by `onerec train` (--seed-run: same, for torchrun)"),
    rm: Path = typer.Option(..., "--rm", help="reward model directory (`onerec reward train`)"),
    data: Path = typer.Option(..., "--data", help="data directory (`onerec data prepare`)"),
    out: Path = typer.Option(..., "--out", help="alignment directory: round_<t>/, LATEST, metrics.json"),
    world: Path = typer.Option(None, "--world", help="simulator world: also report the judge's true reward"),
    shards: Path = typer.Option(None, "--shards", help="read pairs from sampling-server shards instead of sampling here"),
    config: Path = typer.Option(None, "--config", help="TOML file with an \\[align] table"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. align.beta=0.2"),
) -> None:
    """Iterative preference alignment: M_t samples N sessions per user, the RM picks best/worst, M_{t+1} trains on NTP + λ·DPO.

    Also under `torchrun --nproc_per_node=N -m onerec.cli align --seed-run ...` (torchrun would read `--run` as
    its own --run-path; `--seed-run` is the same option, or put `--` before `align`; align.strategy ddp or fsdp):
    rank 0 samples, evaluates and writes; every rank trains."""
    from onerec.align.dpo import AlignConfig, run_alignment
    from onerec.config import load_section
    from onerec.dist import env_rank_world
    from onerec.io import OnerecError

    cfg = load_section(AlignConfig, "align", config, set_)
    for path, what in ((run, "--run"), (rm, "--rm"), (data, "--data")):
        if not path.is_dir():
            raise OnerecError(f"{what}: no such directory {path}")
    result = run_alignment(run, rm, data, out, cfg, world, shards)
    if env_rank_world()[0] != 0:  # under torchrun rank 0 reports
        return
    keys = ("rm_reward_mean", "rm_reward_max", "judge_reward", "recall@10")
    typer.echo(f"{'round':>5} " + " ".join(f"{k:>15}" for k in keys))
    for row in result["rounds"]:
        typer.echo(f"{row['round']:>5} " + " ".join(f"{row.get(k, float('nan')):>15.4f}" for k in keys))
    typer.echo(f"wrote {out / 'metrics.json'}")


def sample_server_command(
    policy: Path = typer.Option(..., "--policy", help="alignment directory whose LATEST file names the current policy"),
    rm: Path = typer.Option(..., "--rm", help="reward model directory"),
    data: Path = typer.Option(..., "--data", help="data directory (users are drawn from its training split)"),
    out: Path = typer.Option(..., "--out", help="shard directory (shared with the trainer)"),
    config: Path = typer.Option(None, "--config", help="TOML file with an \\[align] table (n_beams, session_len)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. align.n_beams=64"),
    shard_users: int = typer.Option(64, "--shard-users", help="users per shard"),
    max_users: int = typer.Option(0, "--max-users", help="users per policy version (0 = all training users)"),
    poll_s: float = typer.Option(5.0, "--poll-s", help="seconds between looks for a new policy"),
    once: bool = typer.Option(False, "--once", help="one pass over the users for the current policy, then exit"),
) -> None:
    """Long-running DPO sampler: generate and score sessions with the latest policy, write preference-pair shards.

    Run several at once with `torchrun --nproc_per_node=N -m onerec.cli sample-server ...` (users sharded by rank)."""
    from onerec.align.dpo import AlignConfig
    from onerec.align.sampler import run_sample_server
    from onerec.config import load_section

    cfg = load_section(AlignConfig, "align", config, set_)
    counts = run_sample_server(policy, rm, data, out, cfg.n_beams, cfg.session_len, shard_users, max_users,
                               poll_s, once, cfg.seed)
    typer.echo(f"sample-server: {counts}")
