"""Popularity drift of what policies recommend: do aligned policies move toward items whose engagement fades
after the training days? (Diagnostic for alignment on real logs, docs/results/alignment.md, "Real KuaiRand-Pure".)

    .venv/bin/python benchmarks/bench_align_drift.py --data runs/kr_full/data \
        --policy M_0=runs/kr_full/model --policy M_2=runs/bench_align/kt_lr3e5_a/seed0/round_2

For the first ``--users`` held-out users of ``--split`` (next-session protocol, history 50) each policy's top-10
items (beam ``--beams``, sessions of ``--m``) are pooled; reported per policy: distinct items, the mean share of
all positive engagements each recommended item received in the train / valid / test days, and the ratio of the
test (valid) share to the train share of those items (< 1: their engagement fades). The held-out targets' own
ratio is the reference. Prints one JSON object, then a readable table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--policy", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--beams", type=int, default=16)
    parser.add_argument("--m", type=int, default=5)
    args = parser.parse_args()
    import polars as pl
    import torch

    from onerec.checkpoint import load_run
    from onerec.evaluate.datasets import next_session_from_data
    from onerec.evaluate.generative import GenerativeRecommender

    torch.set_num_threads(1)
    inter = pl.read_parquet(args.data / "interactions.parquet", columns=["item", "session", "positive"])
    sess = pl.read_parquet(args.data / "sessions.parquet", columns=["session", "split"])
    pos = inter.filter(pl.col("positive")).join(sess, on="session")
    n_items = pl.read_parquet(args.data / "items.parquet", columns=["item"]).height
    share = {}
    for split in ("train", "valid", "test"):
        c = pos.filter(pl.col("split") == split).group_by("item").len()
        counts = np.zeros(n_items)
        counts[c["item"].to_numpy()] = c["len"].to_numpy()
        share[split] = counts / max(counts.sum(), 1.0)
    held = next_session_from_data(args.data, args.split, 50)
    hist = held.history[: args.users]

    def describe(items: np.ndarray) -> dict:
        return {"distinct_items": int(len(np.unique(items))),
                **{f"mean_share_{s}": float(share[s][items].mean()) for s in share},
                "valid_over_train": float(share["valid"][items].sum() / share["train"][items].sum()),
                "test_over_train": float(share["test"][items].sum() / share["train"][items].sum())}

    out = {"data": str(args.data), "split": args.split, "users": int(len(hist)), "beams": args.beams, "policies": {}}
    for spec in args.policy:
        name, run = spec.split("=", 1)
        model, _ = load_run(Path(run))
        model.eval()
        rec = GenerativeRecommender(model, beam_size=args.beams, m=args.m)  # builds the model's own trie
        items = np.concatenate([rec(hist[i:i + 64], 10) for i in range(0, len(hist), 64)])
        out["policies"][name] = describe(items[items >= 0])
    targets = np.concatenate([np.asarray(p, np.int64) for p in held.positives[: args.users]])
    out["held_out_targets"] = describe(targets)
    print(json.dumps(out))
    print(f"{'':<16} {'distinct':>8} {'share train':>11} {'share valid':>11} {'share test':>10} "
          f"{'valid/train':>11} {'test/train':>10}")
    for name, e in [*out["policies"].items(), ("held-out targets", out["held_out_targets"])]:
        print(f"{name:<16} {e['distinct_items']:>8} {e['mean_share_train'] * 1e4:>9.2f}e-4 "
              f"{e['mean_share_valid'] * 1e4:>9.2f}e-4 {e['mean_share_test'] * 1e4:>8.2f}e-4 "
              f"{e['valid_over_train']:>11.3f} {e['test_over_train']:>10.3f}")


if __name__ == "__main__":
    main()
