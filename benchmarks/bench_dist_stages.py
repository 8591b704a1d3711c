"""Reward-model training and DPO alignment at 1 process vs 2 ranks (torchrun, gloo, DDP and FSDP2).

    .venv/bin/python benchmarks/bench_dist_stages.py --run runs/kr_full --config configs/kuairand.toml
    .venv/bin/python benchmarks/bench_dist_stages.py --run runs/demo              # simulator (make demo)

``RUN`` is a finished pipeline run (``RUN/data``, ``RUN/emb``, ``RUN/model`` = M_0, ``RUN/rm``). Every case is
the real command (``onerec reward train`` / ``onerec align``), launched as a subprocess with
``OMP_NUM_THREADS=1`` per process, alone or under ``torchrun --standalone --nproc_per_node=2``; the same
global batch in every case (1 process accumulates what 2 ranks split).

- reward train: ``--epochs`` epochs; samples/s = training sessions x epochs / the summed per-epoch seconds
  that ``reward.json`` logs (data loading and the final evaluation are excluded; they are the same work at
  any world size).
- align: one round of ``--steps`` DPO steps; steps/s = steps / ``train_s`` of the round (sampling and policy
  evaluation run on rank 0 alone by design, so they are reported separately and do not scale).

CPU seconds of all processes (``RUSAGE_CHILDREN``) are reported too: on a shared machine the wall figures
are depressed by other jobs, the CPU figures are not. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench_align import run_timed  # benchmarks/ is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
ONEREC = [sys.executable, "-m", "onerec.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "onerec.cli"]


def _launch(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; returns (wall s, CPU s of the children)."""
    proc, wall, cpu = run_timed(cmd)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, cpu


def reward_case(run: Path, config: Path, ranks: int, strategy: str, epochs: int, out: Path) -> dict:
    args = ["reward", "train", "--data", str(run / "data"), "--config", str(config), "--out", str(out),
            "--set", f"reward.epochs={epochs}", "--set", f"reward.strategy={strategy}", "--set", "reward.threads=1",
            "--set", "reward.progress=false"]
    if (run / "emb").is_dir():
        args[4:4] = ["--emb", str(run / "emb")]
    wall, cpu = _launch((ONEREC if ranks == 1 else TORCHRUN) + args)
    meta = json.loads((out / "reward.json").read_text())["meta"]
    log = meta["train_log"]
    sessions = int(meta["train_sessions"])
    epoch_s = sum(row["seconds"] for row in log)
    return {"stage": "reward train", "ranks": ranks, "strategy": strategy, "epochs": len(log),
            "train_sessions": sessions, "epoch_s": round(epoch_s, 2),
            "samples_per_s": round(sessions * len(log) / epoch_s, 1), "command_wall_s": round(wall, 1),
            "command_cpu_s": round(cpu, 1)}


def align_case(run: Path, config: Path, ranks: int, strategy: str, steps: int, out: Path) -> dict:
    args = ["align", "--seed-run", str(run / "model"), "--rm", str(run / "rm"), "--data", str(run / "data"),
            "--out", str(out), "--config", str(config), "--set", "align.rounds=1", "--set", f"align.steps={steps}",
            "--set", f"align.strategy={strategy}", "--set", "align.threads=1", "--set", "align.progress=false",
            "--set", "align.eval_users=32"]
    wall, cpu = _launch((ONEREC if ranks == 1 else TORCHRUN) + args)
    rnd = json.loads((out / "round_1" / "metrics.json").read_text())["round"]
    return {"stage": "align", "ranks": ranks, "strategy": strategy, "steps": steps, "train_s": rnd["train_s"],
            "steps_per_s": round(steps / rnd["train_s"], 3), "sample_s": rnd["sample_s"],
            "command_wall_s": round(wall, 1), "command_cpu_s": round(cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--epochs", type=int, default=2, help="reward-model epochs per case")
    parser.add_argument("--steps", type=int, default=40, help="DPO steps per case")
    parser.add_argument("--skip-align", action="store_true")
    args = parser.parse_args()
    for sub in ("data", "model", "rm"):
        if not (args.run / sub).is_dir():
            raise SystemExit(f"error: {args.run} has no {sub}/ (a finished `onerec pipeline` run is needed)")
    if not args.config.is_file():
        raise SystemExit(f"error: config not found: {args.config}")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_dist_stages_"))
    try:
        for ranks, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
            tag = f"{ranks}_{strategy}"
            rows.append(reward_case(args.run, args.config, ranks, strategy, args.epochs, tmp / f"rm_{tag}"))
            print(json.dumps(rows[-1]), file=sys.stderr)
            if not args.skip_align:
                rows.append(align_case(args.run, args.config, ranks, strategy, args.steps, tmp / f"align_{tag}"))
                print(json.dumps(rows[-1]), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = {r["stage"]: r for r in rows if r["ranks"] == 1}
    print(f"{'stage':<13} {'ranks':>5} {'strategy':<8} {'throughput':>18} {'speed-up':>8} {'cmd wall s':>10} "
          f"{'cmd CPU s':>9}")
    for r in rows:
        key = "samples_per_s" if r["stage"] == "reward train" else "steps_per_s"
        unit = "samples/s" if key == "samples_per_s" else "steps/s"
        r["speedup"] = round(r[key] / base[r["stage"]][key], 2)
        print(f"{r['stage']:<13} {r['ranks']:>5} {r['strategy']:<8} {r[key]:>8} {unit:<9} {r['speedup']:>7}x "
              f"{r['command_wall_s']:>10} {r['command_cpu_s']:>9}")
    print(json.dumps({"run": str(args.run), "cases": rows, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
