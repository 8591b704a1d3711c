"""Does random exposure fix the reward model on invented sessions? Spearman with the judge, with and without.

    .venv/bin/python benchmarks/bench_reward_random.py [--out runs/bench_reward_random] [--shares 0.05 0.2]

One simulated world per ``simulate.random_share`` (3,000 users x 2,000 items x 14 days, seed 0; the standard
log is the same for every share: the random log has its own random stream) -> ``onerec data prepare``
(request sessions, the dates of ``bench_reward.py``) -> the reward model trained with
``reward.random_sessions`` false (logged sessions only) and true (plus the random-exposure training
sessions) -> Spearman of the RM reward with the judge's true expected reward on held-out logged test
sessions and on invented sessions (uniformly random catalogue items), as ``onerec reward eval --world``.
Prints one JSON object and a readable table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_reward import DATES, onerec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_reward_random")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    import torch

    from onerec.config import load_section
    from onerec.reward import RewardConfig
    from onerec.reward.train import evaluate_reward, train_reward

    torch.set_num_threads(1)
    base = load_section(RewardConfig, "reward", REPO / "configs" / "kuairand.toml", [f"reward.epochs={args.epochs}"])
    results: dict = {"machine": "2 CPU cores, shared with other jobs (contended)", "epochs": args.epochs, "runs": []}
    for k, share in enumerate(args.shares):
        world, data = args.out / f"world_{share}", args.out / f"data_{share}"
        if not (world / "world.json").is_file():
            onerec("simulate", "--out", str(world), "--users", "3000", "--items", "2000", "--days", "14",
                   "--seed", "0", "--set", f"simulate.random_share={share}")
        if not (data / "sessions.parquet").is_file():
            sets = [x for d in DATES + ["data.prior_history=false"] for x in ("--set", d)]
            onerec("data", "prepare", "--source", "kuairand", "--input", str(world), "--out", str(data), *sets)
        # without random sessions the standard log (so the RM) is the same for every share: run it once
        for use in ([False, True] if k == 0 else [True]):
            cfg = dataclasses.replace(base, random_sessions=use)
            rm = args.out / f"rm_{share}_{'random' if use else 'logged'}"
            t0 = time.time()
            model = train_reward(data, rm, cfg)
            metrics = evaluate_reward(rm, data, rm / "eval", world, baselines=False)
            sim = metrics["simulator"]
            results["runs"].append({
                "random_share": share if use else 0.0, "random_sessions": use,
                "train_sessions": model.meta["train_sessions"], "random_train_sessions": model.meta["random_exposure_sessions"],
                "spearman_logged": sim["logged"]["spearman_reward"], "spearman_invented": sim["invented"]["spearman_reward"],
                "within_user_invented": sim["invented"].get("within_user_spearman_reward"),
                "auc": {t: e["auc_reward_model"] for t, e in metrics["towers"].items()},
                "seconds": round(time.time() - t0, 1),
            })
            print(json.dumps(results["runs"][-1], default=float), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2, default=float))
    print(f"{'random share':>12} {'RM trained on':<22} {'train sess.':>11} {'logged':>7} {'invented':>8} {'inv. within-user':>16}")
    for r in results["runs"]:
        what = f"logged + {r['random_train_sessions']} random" if r["random_sessions"] else "logged only"
        print(f"{r['random_share']:>12} {what:<22} {r['train_sessions']:>11} {r['spearman_logged']:>7.3f} "
              f"{r['spearman_invented']:>8.3f} {r['within_user_invented']:>16.3f}")


if __name__ == "__main__":
    main()
