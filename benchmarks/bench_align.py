"""Alignment table (OneRec Table 1 in our setting) and DPO sampler throughput, from a finished pipeline run.

    .venv/bin/python benchmarks/bench_align.py --run runs/demo --seeds 0 1 2 [--split test] [--set align.beta=0.2]

For each seed (``align.seed``: which users get pairs each round, data order) it reruns the alignment rounds of
the run (``RUN/model`` = M_0, ``RUN/rm``, ``RUN/data``, ``RUN/world`` = the judge) with the run's config file
(the ``[align]`` table of ``configs/demo.toml`` unless ``--config``), into ``runs/bench_align/<tag>/seed<s>``,
and prints per round the mean ± std over seeds of: RM-estimated swt / vtr / ltr / reward (mean and max over
the generated sessions per held-out user), the judge's true expected reward of the top session, and
next-session Recall@10; then the relative change of the judge reward and of Recall@10 after the last round
versus M_0 (EVAL.md §3). ``--split valid`` is for tuning; the README table is ``--split test``.

Sampler throughput: ``onerec sample-server --once`` on the run's latest policy for ``--throughput-users``
users (one process, ``OMP_NUM_THREADS=1``), sessions generated and scored per second as the server logs it.
Prints JSON (last line) after the readable table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ["rm_swt_mean", "rm_swt_max", "rm_vtr_mean", "rm_vtr_max", "rm_ltr_mean", "rm_ltr_max", "rm_reward_mean",
        "rm_reward_max", "judge_reward", "recall@10"]


def align_seeds(run: Path, config: Path, seeds: list[int], split: str, overrides: list[str], out: Path) -> dict:
    import torch

    from onerec.align.dpo import AlignConfig, run_alignment
    from onerec.config import load_section

    torch.set_num_threads(1)
    per_seed = {}
    m0 = None  # M_0's row does not depend on align.seed: evaluate it once, reuse it (cached across processes)
    for seed in seeds:
        cfg = load_section(AlignConfig, "align", config, [*overrides, f"align.seed={seed}", f"align.eval_split={split}"])
        cache = m0_cache(run, cfg)
        if m0 is None and cache.is_file():
            m0 = json.loads(cache.read_text())
        start = time.perf_counter()
        cpu0 = _cpu()
        world = run / "world" if (run / "world").is_dir() else None
        result = run_alignment(run / "model", run / "rm", run / "data", out / f"seed{seed}", cfg, world,
                               log=lambda line: print(line, file=sys.stderr), seed_metrics=m0)
        if m0 is None:
            m0 = result["rounds"][0]
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(m0))
        per_seed[seed] = {"rounds": result["rounds"], "wall_s": round(time.perf_counter() - start, 1),
                          "cpu_s": round(_cpu() - cpu0, 1), "config": result["config"]}
    return per_seed


def m0_cache(run: Path, cfg) -> Path:
    """Where M_0's evaluation row is kept: keyed by the run's model and RM weights and the evaluation settings."""
    import hashlib

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    key = {"model": sha(run / "model" / "model.safetensors"),
           "rm": sorted((p.name, sha(p)) for p in (run / "rm").glob("*.safetensors")),
           **{k: getattr(cfg, k) for k in ("eval_users", "eval_beams", "eval_recall_beams", "eval_split", "session_len")},
           "world": (run / "world").is_dir()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return REPO / "runs" / "bench_align" / "m0_cache" / f"{run.name}-{digest}.json"


def summarise(per_seed: dict) -> dict:
    """Per round and key: mean and std over seeds; relative change of the last round vs M_0 per seed."""
    runs = list(per_seed.values())
    n_rounds = min(len(r["rounds"]) for r in runs)
    table = []
    for t in range(n_rounds):
        row = {"round": t}
        for key in KEYS:
            values = [r["rounds"][t][key] for r in runs if key in r["rounds"][t]]
            if values:
                row[key] = (float(np.mean(values)), float(np.std(values)))
        table.append(row)
    rel = {}
    for key in ("judge_reward", "rm_reward_max", "rm_reward_mean", "recall@10"):
        values = [100 * (r["rounds"][n_rounds - 1][key] / r["rounds"][0][key] - 1) for r in runs
                  if key in r["rounds"][0] and r["rounds"][0][key]]
        if values:
            rel[key] = (float(np.mean(values)), float(np.std(values)))
    return {"table": table, "relative_change_pct_last_vs_m0": rel}


def throughput(run: Path, config: Path, users: int, out: Path) -> dict:
    shards = out / "shards"
    cmd = [str(REPO / ".venv" / "bin" / "onerec"), "sample-server", "--policy", str(run / "align"), "--rm",
           str(run / "rm"), "--data", str(run / "data"), "--out", str(shards), "--config", str(config), "--once",
           "--max-users", str(users), "--shard-users", str(max(1, users // 2))]
    proc, wall, cpu = run_timed(cmd)
    if proc.returncode:
        raise SystemExit(f"sample-server failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rates = [float(x) for x in re.findall(r"([0-9.]+) sessions/s generated and scored", proc.stdout + proc.stderr)]
    return {"users": users, "shards_sessions_per_s": rates, "process_wall_s": round(wall, 1),
            "process_cpu_s": round(cpu, 1), "log_tail": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}


def run_timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` with ``OMP_NUM_THREADS=1``; returns (the process, wall s, CPU s of the children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _pm(cell: tuple[float, float] | None, scale: float = 1.0) -> str:
    if cell is None:
        return "-"
    return f"{cell[0] * scale:.4f} ± {cell[1] * scale:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="align.key=value")
    parser.add_argument("--tag", default="")
    parser.add_argument("--only-throughput", action="store_true", help="skip the alignment table")
    parser.add_argument("--throughput-users", type=int, default=32, help="0: skip the sampler measurement")
    args = parser.parse_args()
    for sub in ("model", "rm", "data"):
        if not (args.run / sub).is_dir():
            raise SystemExit(f"{args.run}: no {sub}/ (run `make demo` first)")
    tag = args.tag or f"{args.split}-" + ("-".join(o.replace("align.", "") for o in args.overrides) or "default")
    out = REPO / "runs" / "bench_align" / tag
    if args.only_throughput:
        sampler = throughput(args.run, args.config, args.throughput_users, out)
        print(json.dumps({"sampler": sampler, "machine": f"{os.cpu_count()} CPUs (shared), load average "
                          f"{os.getloadavg()[0]:.1f}"}))
        return
    per_seed = align_seeds(args.run, args.config, args.seeds, args.split, args.overrides, out)
    summary = summarise(per_seed)
    print(f"alignment on {args.run} ({args.split} split), seeds {args.seeds}, overrides {args.overrides or 'none'}")
    cols = ["rm_swt_mean", "rm_swt_max", "rm_vtr_mean", "rm_ltr_mean", "rm_reward_mean", "rm_reward_max",
            "judge_reward", "recall@10"]
    print("round | " + " | ".join(cols))
    for row in summary["table"]:
        print(f"M_{row['round']} | " + " | ".join(_pm(row.get(c)) for c in cols))
    for key, (mean, std) in summary["relative_change_pct_last_vs_m0"].items():
        print(f"{key}: {mean:+.2f} % ± {std:.2f} (last round vs M_0)")
    print("wall / CPU s per seed: " + ", ".join(f"{s}: {r['wall_s']} / {r['cpu_s']}" for s, r in per_seed.items()))
    result = {"run": str(args.run), "split": args.split, "seeds": args.seeds, "overrides": args.overrides,
              **summary, "per_seed": {s: {k: v for k, v in r.items()} for s, r in per_seed.items()},
              "machine": f"{os.cpu_count()} CPUs (shared), load average {os.getloadavg()[0]:.1f}"}
    if args.throughput_users and (args.run / "align" / "LATEST").is_file():
        result["sampler"] = throughput(args.run, args.config, args.throughput_users, out)
        print(f"sampler: {result['sampler']['shards_sessions_per_s']} sessions/s generated and scored "
              f"({args.throughput_users} users, wall {result['sampler']['process_wall_s']} s, "
              f"CPU {result['sampler']['process_cpu_s']} s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_align.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, default=str))


if __name__ == "__main__":
    main()
