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

from onerec.config import apply_overrides, from_dict, to_dict  # noqa: E402
from onerec.evaluate import protocols  # noqa: E402
from onerec.evaluate.baselines.popularity import Popularity  # noqa: E402

DATASETS = Path(os.environ.get("ONEREC_DATASETS", REPO.parent / "shared" / "datasets"))
AMAZON_FILES = {"toys": "amazon_toys/sequential_data.txt.gz", "sports": "amazon_sports/Sports_and_Outdoors.txt.gz"}


def amazon_sequences(dataset: str) -> tuple[list[np.ndarray], int, str]:
    """Per-user chronological item sequences (0-based P5 ids) straight from the shared sequence file."""
    path = DATASETS / AMAZON_FILES[dataset]
    with gzip.open(path, "rt") as fh:
        seqs = [np.array([int(t) - 1 for t in line.split()[1:]], dtype=np.int64) for line in fh if line.strip()]
    return seqs, int(max(int(s.max()) for s in seqs) + 1), str(path)


def sasrec_runs(train_sequences, n_items, evaluate, valid_sub, valid, test, seeds, overrides, log) -> list[dict]:
    """Train one SASRec-CE per seed (model selection: NDCG@10 on ``valid_sub``), score it on valid and test."""
    import torch

    from onerec.evaluate.baselines import sasrec

    runs = []
    for seed in seeds:
        raw = apply_overrides({"seed": seed}, overrides)
        cfg = from_dict(sasrec.SASRecConfig, raw, "sasrec")
        torch.set_num_threads(cfg.threads)
        model, summary = sasrec.fit(
            train_sequences,
            n_items,
            cfg,
            validate=lambda rec: evaluate(rec, valid_sub)["ndcg@10"],
            log=lambda row: log(f"  seed {seed} " + json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})),
        )
        rec = sasrec.SASRecRecommender(model)
        runs.append(
            {
                "seed": seed,
                "config": to_dict(cfg),
                "train_seconds": summary["train_seconds"],
                "epochs_run": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "valid": evaluate(rec, valid),
                "test": evaluate(rec, test),
            }
        )
        log(f"  seed {seed}: valid {runs[-1]['valid']} test {runs[-1]['test']} ({summary['train_seconds']:.0f} s)")
    return runs


def subset(samples, n: int):
    """A fixed random subset (seed 12345) of ``n`` evaluation samples, for model selection during training."""
    size = len(samples.history)
    idx = np.sort(np.random.default_rng(12345).choice(size, size=min(n, size), replace=False))
    if isinstance(samples, protocols.NextItemSet):
        return protocols.NextItemSet(samples.history[idx], samples.target[idx])
    return protocols.NextSessionSet(samples.history[idx], [samples.positives[i] for i in idx])


def mean_std(runs: list[dict], split: str) -> dict[str, list[float]]:
    keys = [k for k in runs[0][split] if k != "n_samples"]
    return {k: [float(np.mean([r[split][k] for r in runs])), float(np.std([r[split][k] for r in runs]))] for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["toys", "sports", "kuairand", "sim"], default="toys")
    ap.add_argument("--data", default=None, help="data-layer directory (required for kuairand / sim)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["popularity", "sasrec"])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="SASRec config key=value")
    ap.add_argument("--max-history", type=int, default=None, help="default 20 (Amazon) / 50 (sessions)")
    ap.add_argument("--m", type=int, default=5, help="session length m (next-session protocol)")
    ap.add_argument("--valid-users", type=int, default=5000)
    ap.add_argument("--combine", nargs="+", default=None, help="merge the SASRec runs of these result files")
    ap.add_argument("--markdown", nargs="+", default=None, help="print README rows for these result files")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.markdown:
        for file in args.markdown:
            print(markdown_rows(json.loads(Path(file).read_text())))
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.combine:
        result = combine([json.loads(Path(f).read_text()) for f in args.combine])
    else:
        result = run(args, log)
    print(json.dumps(result, indent=2))
    print_table(result)
    if args.out:
        from onerec.io import write_json

        write_json(Path(args.out), result)


def run(args, log) -> dict:
    from onerec.evaluate import datasets

    session = args.dataset in ("kuairand", "sim")
    max_history = args.max_history or (50 if session else 20)
    if session:
        if not args.data:
            raise SystemExit("--data DIR (onerec data prepare output) is required for next-session datasets")
        train, n_items = datasets.session_train_sequences(Path(args.data))
        valid = datasets.next_session_from_data(Path(args.data), "valid", max_history)
        test = datasets.next_session_from_data(Path(args.data), "test", max_history)
        source, protocol = args.data, f"EVAL.md §2 next session, temporal split, m={args.m}, Recall@K over the top K"

        def evaluate(rec, samples):
            return protocols.evaluate_next_session(rec, samples, args.m, ks=(10, 50))
    else:
        if args.data:
            loo, source = datasets.loo_from_data(Path(args.data), max_history), args.data
        else:
            seqs, n, source = amazon_sequences(args.dataset)
            loo = protocols.leave_one_out(seqs, n, max_history)
        train, n_items, valid, test = loo.train_sequences, loo.n_items, loo.valid, loo.test
        protocol = "EVAL.md §1 leave-one-out, full ranking over all items, no history filtering"

        def evaluate(rec, samples):
            return protocols.evaluate_next_item(rec, samples, ks=(5, 10))

    result: dict = {
        "dataset": args.dataset,
        "source": source,
        "protocol": protocol,
        "train_sequences": len(train),
        "items": n_items,
        "valid_samples": len(valid.history),
        "test_samples": len(test.history),
        "max_history": max_history,
        "model_selection": f"NDCG@10 on a fixed random subset of {args.valid_users} validation samples",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs (torch threads: see each run config)",
        "models": {},
    }
    if "popularity" in args.models:
        t0 = time.perf_counter()
        pop = Popularity.fit(train, n_items)
        result["models"]["popularity"] = {
            "train_seconds": time.perf_counter() - t0,
            "valid": evaluate(pop, valid),
            "test": evaluate(pop, test),
        }
        log(f"popularity: {result['models']['popularity']}")
    if "sasrec" in args.models:
        runs = sasrec_runs(train, n_items, evaluate, subset(valid, args.valid_users), valid, test, args.seeds, args.overrides, log)
        result["models"]["sasrec_ce"] = summarise(runs)
    return result


def summarise(runs: list[dict]) -> dict:
    return {
        "runs": runs,
        "valid_mean_std": mean_std(runs, "valid"),
        "test_mean_std": mean_std(runs, "test"),
        "train_seconds_mean": float(np.mean([r["train_seconds"] for r in runs])),
    }


def combine(results: list[dict]) -> dict:
    """One table from several result files of the same dataset (e.g. one seed per process)."""
    out = dict(results[0])
    out["models"] = dict(results[0]["models"])
    runs = [r for res in results for r in res["models"].get("sasrec_ce", {}).get("runs", [])]
    configs = {json.dumps({k: v for k, v in r["config"].items() if k != "seed"}, sort_keys=True) for r in runs}
    if len(configs) > 1:
        raise SystemExit(f"cannot combine runs of {len(configs)} different SASRec configs")
    if runs:
        out["models"]["sasrec_ce"] = summarise(sorted(runs, key=lambda r: r["seed"]))
    return out


def markdown_rows(result: dict) -> str:
    """README table rows: model, then test mean ± std (valid in brackets) per metric, seeds, train time."""
    models = result["models"]
    first = next(iter(models.values()))
    keys = [k for k in (first["test"] if "test" in first else first["test_mean_std"]) if not k.startswith("n_")]
    keys.sort(key=lambda k: (not k.startswith("session"), int(k.split("@")[1]), "ndcg" in k))
    lines = ["| model | " + " | ".join(f"{k} test (valid)" for k in keys) + " | seeds | train wall s (mean) |",
             "|---" * (len(keys) + 3) + "|"]
    for name, entry in models.items():
        if "runs" in entry:
            t, v = entry["test_mean_std"], entry["valid_mean_std"]
            cells = [f"{t[k][0]:.4f} ± {t[k][1]:.4f} ({v[k][0]:.4f})" for k in keys]
            seeds = ",".join(str(r["seed"]) for r in entry["runs"])
            epochs = "/".join(str(r["best_epoch"]) + "of" + str(r["epochs_run"]) for r in entry["runs"])
            secs = f"{entry['train_seconds_mean']:.0f} (best epoch {epochs})"
        else:
            cells = [f"{entry['test'][k]:.4f} ({entry['valid'][k]:.4f})" for k in keys]
            seeds, secs = "-", f"{entry['train_seconds']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seeds} | {secs} |")
    return "\n".join(lines)


def print_table(result: dict) -> None:
    models = result["models"]
    first = next(iter(models.values()))
    split0 = first["valid"] if "valid" in first else first["valid_mean_std"]
    keys = [k for k in split0 if not k.startswith("n_")]
    print(f"\n{result['dataset']}: {result['protocol']}; {result['items']} items", file=sys.stderr)
    print(f"{'model':<12} {'split':<6} " + " ".join(f"{k:>16}" for k in keys) + f" {'train s':>8}", file=sys.stderr)
    for name, entry in models.items():
        for split in ("valid", "test"):
            if "runs" in entry:
                ms = entry[f"{split}_mean_std"]
                cells = [f"{ms[k][0]:.4f}±{ms[k][1]:.4f}" for k in keys]
                secs = entry["train_seconds_mean"]
            else:
                cells = [f"{entry[split][k]:.4f}" for k in keys]
                secs = entry["train_seconds"]
            print(f"{name:<12} {split:<6} " + " ".join(f"{c:>16}" for c in cells) + f" {secs:>8.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
