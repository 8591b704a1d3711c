"""``onerec reward {train,eval,score}``: the session reward model's commands (typer sub-app ``reward``).

Torch and the model are imported inside the command functions so ``onerec --help`` stays fast.
``score`` reads a Parquet file with one candidate session per row: ``history`` list<i32> (the user's
positives, oldest first; may be empty), ``items`` list<i32> (the session), optional ``user`` i32 (enables
user features); it writes the same rows plus one float column per tower and ``reward``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Session-wise reward model R(u, S): train, evaluate, score sessions.", no_args_is_help=True)


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="data directory (onerec data prepare)"),
    out: Path = typer.Option(..., "--out", help="reward model directory to write (RM)"),
    emb: Path = typer.Option(None, "--emb", help="item embeddings directory (onerec embed), optional"),
    config: Path = typer.Option(None, "--config", help="TOML file with a \\[reward] table"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. reward.epochs=3"),
) -> None:
    """Train on every logged session of the training splits; writes reward.safetensors and reward.json.

    Also under `torchrun --nproc_per_node=N -m onerec.cli reward train ...` (reward.strategy ddp or fsdp)."""
    from onerec.config import load_section
    from onerec.dist import env_rank_world
    from onerec.reward import RewardConfig
    from onerec.reward.train import train_reward

    cfg = load_section(RewardConfig, "reward", config, set_)
    model = train_reward(data, out, cfg, emb, echo=typer.echo)
    if env_rank_world()[0] != 0:  # under torchrun rank 0 reports
        return
    meta = model.meta
    dropped = f"; dropped (no labels): {', '.join(meta['towers_dropped'])}" if meta["towers_dropped"] else ""
    typer.echo(f"towers {', '.join(model.towers)}{dropped}; {meta['train_sessions']:,} training sessions, "
               f"{meta['sessions_without_sample']:,} without a sample; {meta['train_seconds']:.1f}s")
    typer.echo(f"reward model: {out}")


@app.command("eval")
def eval_cmd(
    rm: Path = typer.Option(..., "--rm", help="reward model directory"),
    data: Path = typer.Option(..., "--data", help="data directory with the test split"),
    out: Path = typer.Option(None, "--out", help="where metrics.json and calibration PNGs go (default RM/eval)"),
    world: Path = typer.Option(None, "--world", help="simulator world: also Spearman vs the judge's expected reward"),
    run: Path = typer.Option(None, "--run", help="OneRec run: with --world, also judge its generated sessions"),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the item-rate and pointwise baselines"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """AUC per tower on the test split vs a per-item rate baseline and a pointwise model; calibration plots."""
    from onerec.reward.train import evaluate_reward

    metrics = evaluate_reward(rm, data, out, world, baselines=not no_baselines, run_dir=run)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    first = next(iter(metrics["towers"].values()))
    names = [k.removeprefix("auc_") for k in first if k.startswith("auc_") and not k.endswith("_multi_item")]
    for title, suffix in ((f"test sessions {metrics['test_sessions']:,}", ""),
                          (f"of which with >= 2 items {metrics['multi_item_test_sessions']:,}", "_multi_item")):
        typer.echo(title)
        typer.echo("tower  positives  " + "  ".join(f"{n:>14}" for n in names))
        for tower, entry in metrics["towers"].items():
            typer.echo(f"{tower:<6} {entry['positives' + suffix]:>9}  "
                       + "  ".join(f"{entry['auc_' + n + suffix]:>14.4f}" for n in names))
    if "simulator" in metrics:
        typer.echo("simulator: " + json.dumps(metrics["simulator"]))


@app.command("score")
def score_cmd(
    rm: Path = typer.Option(..., "--rm", help="reward model directory"),
    sessions: Path = typer.Option(..., "--sessions", help="Parquet: history list<i32>, items list<i32>[, user i32]"),
    out: Path = typer.Option(..., "--out", help="Parquet to write: the input rows plus one column per tower and reward"),
    batch_size: int = typer.Option(1024, "--batch-size", help="rows scored per forward pass"),
) -> None:
    """Score candidate sessions from a file (one session per row) and write their tower probabilities."""
    from onerec.reward.model import RewardModel
    from onerec.reward.score import score_file

    model = RewardModel.load(rm)
    n = score_file(model, sessions, out, batch_size)
    typer.echo(f"scored {n:,} sessions -> {out}")
