"""Quality tables (EVAL.md §1/§2/§5): popularity and SASRec-CE (and later the generative models) per dataset.

Usage (2 CPU threads, as the README reports):
    .venv/bin/python benchmarks/bench_quality.py --dataset toys --seeds 0 1 2 --out runs/quality/toys.json
    .venv/bin/python benchmarks/bench_quality.py --dataset toys --seeds 0 --set dropout=0.5   # a tuning run
    .venv/bin/python benchmarks/bench_quality.py --dataset kuairand --data runs/data/kuairand ...

Amazon (leave-one-out): the sequences are read from the data layer's directory when ``--data`` is given
(``onerec data prepare --source amazon``), else straight from ``../shared/datasets/amazon_*`` (the P5
sequence file; the same sequences, first item = oldest). Model selection uses NDCG@10 on a fixed random
subset of validation users (``--valid-users``) during training; the reported validation and test figures
are over all users. Prints a JSON document and a readable table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onerec.config import apply_overrides, from_dict  # noqa: E402
from onerec.evaluate import protocols  # noqa: E402
from onerec.evaluate.baselines.popularity import Popularity  # noqa: E402

DATASETS = Path(os.environ.get("ONEREC_DATASETS", REPO.parent / "shared" / "datasets"))
AMAZON_FILES = {"toys": "amazon_toys/sequential_data.txt.gz", "sports": "amazon_sports/Sports_and_Outdoors.txt.gz"}


def amazon_sequences(dataset: str, data_dir: str | None) -> tuple[list[np.ndarray], int, str]:
    """Per-user chronological item sequences (0-based ids) and the item count, plus where they came from."""
    if data_dir:
        from onerec.evaluate.protocols import sequences_from_data

        seqs, n_items = sequences_from_data(Path(data_dir))
        return seqs, n_items, str(data_dir)
    path = DATASETS / AMAZON_FILES[dataset]
    with gzip.open(path, "rt") as fh:
        seqs = [np.array([int(t) - 1 for t in line.split()[1:]], dtype=np.int64) for line in fh if line.strip()]
    return seqs, int(max(int(s.max()) for s in seqs) + 1), str(path)


def sasrec_runs(loo: protocols.LeaveOneOut, seeds: list[int], overrides: list[str], valid_users: int, log) -> list[dict]:
    import torch

    from onerec.evaluate.baselines import sasrec

    rng = np.random.default_rng(12345)
    sub = np.sort(rng.choice(len(loo.valid.target), size=min(valid_users, len(loo.valid.target)), replace=False))
    valid_sub = protocols.NextItemSet(loo.valid.history[sub], loo.valid.target[sub])
    runs = []
    for seed in seeds:
        raw = apply_overrides({"seed": seed}, overrides)
        cfg = from_dict(sasrec.SASRecConfig, raw, "sasrec")
        torch.set_num_threads(cfg.threads)
        model, summary = sasrec.fit(
            loo.train_sequences,
            loo.n_items,
            cfg,
            validate=lambda rec: protocols.evaluate_next_item(rec, valid_sub)["ndcg@10"],
            log=lambda row: log(f"  seed {seed} " + json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})),
        )
        rec = sasrec.SASRecRecommender(model)
        runs.append(
            {
                "seed": seed,
                "config": raw | {k: getattr(cfg, k) for k in vars(cfg)},
                "train_seconds": summary["train_seconds"],
                "epochs_run": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "valid": protocols.evaluate_next_item(rec, loo.valid),
                "test": protocols.evaluate_next_item(rec, loo.test),
            }
        )
        log(f"  seed {seed}: valid {runs[-1]['valid']} test {runs[-1]['test']} ({summary['train_seconds']:.0f} s)")
    return runs


def mean_std(runs: list[dict], split: str) -> dict[str, list[float]]:
    keys = [k for k in runs[0][split] if k != "n_samples"]
    return {k: [float(np.mean([r[split][k] for r in runs])), float(np.std([r[split][k] for r in runs]))] for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["toys", "sports"], default="toys")
    ap.add_argument("--data", default=None, help="data-layer directory (samples.parquet ...) instead of the raw file")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["popularity", "sasrec"])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="SASRec config key=value")
    ap.add_argument("--max-history", type=int, default=20)
    ap.add_argument("--valid-users", type=int, default=5000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    seqs, n_items, source = amazon_sequences(args.dataset, args.data)
    loo = protocols.leave_one_out(seqs, n_items, args.max_history)
    result: dict = {
        "dataset": args.dataset,
        "source": source,
        "protocol": "EVAL.md §1 leave-one-out, full ranking over all items, no history filtering",
        "users": len(seqs),
        "items": n_items,
        "max_history": args.max_history,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus visible, torch threads 2, shared/contended",
        "models": {},
    }
    if "popularity" in args.models:
        t0 = time.perf_counter()
        pop = Popularity.fit(loo.train_sequences, n_items)
        fit_s = time.perf_counter() - t0
        result["models"]["popularity"] = {
            "train_seconds": fit_s,
            "valid": protocols.evaluate_next_item(pop, loo.valid),
            "test": protocols.evaluate_next_item(pop, loo.test),
        }
        log(f"popularity: {result['models']['popularity']}")
    if "sasrec" in args.models:
        runs = sasrec_runs(loo, args.seeds, args.overrides, args.valid_users, log)
        result["models"]["sasrec_ce"] = {
            "runs": runs,
            "valid_mean_std": mean_std(runs, "valid"),
            "test_mean_std": mean_std(runs, "test"),
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
        }
    print(json.dumps(result, indent=2))
    print_table(result)
    if args.out:
        from onerec.io import write_json

        write_json(Path(args.out), result)


def print_table(result: dict) -> None:
    print(f"\n{result['dataset']} ({result['protocol']}), {result['users']} users, {result['items']} items", file=sys.stderr)
    print(f"{'model':<12} {'split':<6} {'R@5':>15} {'N@5':>15} {'R@10':>15} {'N@10':>15} {'train s':>8}", file=sys.stderr)
    for name, entry in result["models"].items():
        for split in ("valid", "test"):
            if "runs" in entry:
                ms = entry[f"{split}_mean_std"]
                cells = [f"{ms[k][0]:.4f}±{ms[k][1]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")]
                secs = entry["train_seconds_mean"]
            else:
                cells = [f"{entry[split][k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")]
                secs = entry["train_seconds"]
            print(f"{name:<12} {split:<6} " + " ".join(f"{c:>15}" for c in cells) + f" {secs:>8.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
