"""Reward-model benchmark: AUC per tower on real KuaiRand vs two baselines, and agreement with the simulator's judge.

    .venv/bin/python benchmarks/bench_reward.py [--out runs/bench_reward] [--epochs 5] [--skip-kuairand] [--skip-sim]

1. KuaiRand-Pure (../shared/datasets/kuairand_pure, ``configs/kuairand.toml``: 6 h gap sessions, train
   04-25..05-04, valid 05-05 for the epoch choice, test 05-06..05-08): train the RM on every training
   session, then AUC per tower on the test sessions for the RM, a per-item rate baseline and a pointwise
   model (same features, no session attention).
2. Simulator: a world (3,000 users, 2,000 items, 14 days, seed 0) -> data (request sessions, same dates)
   -> RM -> the same AUC table plus Spearman between the RM reward and the judge's true expected reward
   on held-out logged sessions and on invented sessions (random catalogue items).
Prints one JSON object and a readable table; writes everything under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATES = ['data.valid_start="2022-05-05"', 'data.test_start="2022-05-06"', 'data.test_end="2022-05-09"',
         "data.timezone=Asia/Shanghai"]


def onerec(*args: str) -> None:
    cmd = [str(REPO / ".venv" / "bin" / "onerec"), *args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=sys.stderr)  # stdout carries only the JSON + table


def run_case(name: str, data: Path, rm: Path, epochs: int, world: Path | None) -> dict:
    from onerec.config import load_section
    from onerec.reward import RewardConfig
    from onerec.reward.train import evaluate_reward, train_reward

    cfg = load_section(RewardConfig, "reward", REPO / "configs" / "kuairand.toml", [f"reward.epochs={epochs}"])
    t0 = time.time()
    model = train_reward(data, rm, cfg, echo=lambda s: print(f"[{name}] {s}", file=sys.stderr, flush=True))
    train_s = time.time() - t0
    metrics = evaluate_reward(rm, data, rm / "eval", world)
    metrics["train_seconds"] = round(train_s, 1)
    metrics["towers_dropped"] = model.meta["towers_dropped"]
    return metrics


def table(name: str, metrics: dict) -> str:
    lines = [f"{name}: {metrics['test_sessions']:,} test sessions, {metrics['train_sessions']:,} train sessions, "
             f"train {metrics['train_seconds']}s, eval (incl. pointwise training) {metrics['eval_seconds']}s",
             f"{'tower':<6} {'test pos':>8} {'RM AUC':>8} {'item-rate':>9} {'pointwise':>9} {'RM ECE':>7}"]
    for tower, e in metrics["towers"].items():
        lines.append(f"{tower:<6} {e['positives']:>8} {e['auc_reward_model']:>8.4f} {e['auc_item_rate']:>9.4f} "
                     f"{e['auc_pointwise']:>9.4f} {e['ece_reward_model']:>7.4f}")
    if "simulator" in metrics:
        for part, e in metrics["simulator"].items():
            lines.append(f"simulator {part:<9} n={e['sessions']:>5}  Spearman(reward, judge reward) = "
                         f"{e['spearman_reward']:.4f}  swt {e.get('spearman_swt', float('nan')):.3f}  "
                         f"vtr {e.get('spearman_vtr', float('nan')):.3f}  ltr {e.get('spearman_ltr', float('nan')):.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_reward")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--skip-kuairand", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    out = args.out
    results = {"machine": "2 CPU cores, shared with other jobs (contended)", "epochs": args.epochs}
    if not args.skip_kuairand:
        data = out / "kr_data"
        if not (data / "sessions.parquet").is_file():
            onerec("data", "prepare", "--config", "configs/kuairand.toml", "--input",
                   str(args.datasets / "kuairand_pure"), "--out", str(data))
        results["kuairand"] = run_case("kuairand", data, out / "kr_rm", args.epochs, None)
    if not args.skip_sim:
        world, data = out / "world", out / "sim_data"
        if not (world / "world.json").is_file():
            onerec("simulate", "--out", str(world), "--users", "3000", "--items", "2000", "--days", "14", "--seed", "0")
        if not (data / "sessions.parquet").is_file():
            sets = [x for d in DATES + ["data.prior_history=false"] for x in ("--set", d)]
            onerec("data", "prepare", "--source", "kuairand", "--input", str(world), "--out", str(data), *sets)
        results["simulator"] = run_case("simulator", data, out / "sim_rm", args.epochs, world)
    print(json.dumps(results, indent=2, sort_keys=True, default=float))
    for name in ("kuairand", "simulator"):
        if name in results:
            print(table(name, results[name]))


if __name__ == "__main__":
    main()
