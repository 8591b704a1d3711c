"""The item-embedding check on real data: kNN next-item Recall@10 of popularity, content-only and aligned.

    .venv/bin/python benchmarks/bench_embed.py                       # Amazon Toys (EVAL.md §1) + KuaiRand (§2)
    .venv/bin/python benchmarks/bench_embed.py --datasets toys --seeds 0 --set embed.epochs=2   # quick look

For each dataset: ``onerec data prepare`` with the dataset's config (skipped when the data directory
exists), then ``run_embed`` once per seed with the config's ``[embed]`` table (method ``aligned``; the
``content`` projection and popularity are scored in the same run on the same held-out samples). Prints
JSON (every run's metrics) and a Markdown table of mean ± std over seeds, with the training wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = {
    "toys": ("configs/amazon_toys.toml", "Amazon Toys, leave-one-out test (EVAL.md §1)"),
    "kuairand": ("configs/kuairand.toml", "KuaiRand-Pure, next-session positives, test days (EVAL.md §2)"),
    "sports": ("configs/amazon_sports.toml", "Amazon Sports, leave-one-out test (EVAL.md §1)"),
    "movielens": ("configs/movielens.toml", "MovieLens-1M, temporal split (EVAL.md §2)"),
}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="toys,kuairand", help=f"comma list of {list(DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_embed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="embed.key=value")
    args = parser.parse_args()

    from onerec.config import load_section
    from onerec.embed import EmbedConfig
    from onerec.embed.cli import run_embed

    seeds = [int(s) for s in args.seeds.split(",")]
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, 2 CPU cores shared with other jobs",
                    "threads": None, "datasets": {}}
    for name in args.datasets.split(","):
        config, label = DATASETS[name]
        data = args.work / name / "data"
        if not (data / "samples.parquet").is_file():
            cmd = [str(REPO / ".venv/bin/onerec"), "data", "prepare", "--config", config, "--out", str(data)]
            subprocess.run(cmd, check=True, cwd=REPO, stdout=sys.stderr)  # stdout carries only the JSON + table
        runs = []
        for seed in seeds:
            cfg = load_section(EmbedConfig, "embed", REPO / config, [*args.overrides, f"embed.seed={seed}",
                                                                   'embed.method="aligned"'])
            report["threads"] = cfg.threads
            started = time.perf_counter()
            metrics = run_embed(data, args.work / name / f"emb_seed{seed}", cfg, log=lambda m: print(m, file=sys.stderr))
            metrics["total_wall_s"] = round(time.perf_counter() - started, 1)
            runs.append(metrics)
        report["datasets"][name] = {"label": label, "config": config, "runs": runs}
    print(json.dumps(report, indent=2))

    print("\n| dataset (protocol) | samples | popularity R@10 | content kNN R@10 | aligned kNN R@10 | aligned train wall time |")
    print("|---|---|---|---|---|---|")
    for name, entry in report["datasets"].items():
        runs = entry["runs"]
        col = {m: [r["methods"][m]["recall@10"] for r in runs] for m in ("popularity", "content", "aligned")}
        wall = [r["train_wall_s"] for r in runs]
        print(f"| {entry['label']} | {runs[0]['samples']} | {_mean_std(col['popularity'])} | "
              f"{_mean_std(col['content'])} | {_mean_std(col['aligned'])} (n={len(runs)}) | "
              f"{np.mean(wall):.0f} s |")


if __name__ == "__main__":
    main()
