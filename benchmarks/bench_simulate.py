"""Benchmark the simulator: generation time and peak memory, judge throughput, calibration table.

Run: .venv/bin/python benchmarks/bench_simulate.py [--users 100000 --items 10000 --days 14]
Prints one JSON object and a readable table. Peak memory is the process's max RSS (Linux ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def session_effect_gap(world, rng: np.random.Generator, n_users: int, m: int, day: int) -> tuple[float, float]:
    """Mean judge reward of the pointwise top-m items by true affinity vs top-m with distinct tags and authors."""
    from onerec.simulate.judge import expected_session

    users = rng.choice(world.n_users, size=min(n_users, world.n_users), replace=False)
    top, distinct = [], []
    for lo in range(0, len(users), 200):
        u = users[lo:lo + 200]
        aff = world.affinity(u, np.broadcast_to(np.arange(world.n_items), (len(u), world.n_items)), day)
        order = np.argsort(-aff, axis=1)[:, : 20 * m]  # (b, 20m) best items first
        top.append(order[:, :m])
        for row in order:
            seen_tags, seen_authors, picked = set(), set(), []
            for i in row:
                tag, author = int(world.item_tags[i, 0]), int(world.item_authors[i])
                if tag in seen_tags or author in seen_authors:
                    continue
                seen_tags.add(tag), seen_authors.add(author), picked.append(i)
                if len(picked) == m:
                    break
            picked += [i for i in row if i not in picked][: m - len(picked)]
            distinct.append(picked)
    a = expected_session(world, users, np.concatenate(top), day)["reward"].mean()
    b = expected_session(world, users, np.array(distinct), day)["reward"].mean()
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the world here (default: a temp dir)")
    args = parser.parse_args()

    from onerec.simulate.cli import format_summary
    from onerec.simulate.config import SimulateConfig
    from onerec.simulate.judge import expected_session
    from onerec.simulate.world import World
    from onerec.simulate.writer import generate

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sim_")) / "world"
    cfg = SimulateConfig(users=args.users, items=args.items, days=args.days, seed=args.seed)
    t0 = time.perf_counter()
    summary = generate(cfg, out)
    gen_s = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20

    world = World.load(out)
    rng = np.random.default_rng(0)
    n = 20_000
    users = rng.choice(world.n_users, size=n)
    items = rng.choice(world.n_items, size=(n, 6))
    t1 = time.perf_counter()
    expected_session(world, users, items, day=cfg.days)
    judge_s = time.perf_counter() - t1
    pointwise, diverse = session_effect_gap(world, rng, n_users=1000, m=6, day=cfg.days)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    result = {
        "users": args.users, "items": args.items, "days": args.days, "rows": summary["rows"],
        "requests": summary["requests"], "generate_s": round(gen_s, 1),
        "rows_per_s": round(summary["rows"] / gen_s), "peak_rss_gb": round(peak_gb, 2),
        "output_mb": round(size_mb, 1), "judge_sessions_per_s": round(n / judge_s),
        "rates": {k: round(v["simulated"], 5) for k, v in summary["rates"].items()},
        "hq_request_share": round(summary["high_quality"]["request_share"], 4),
        "hq_user_day_share": round(summary["high_quality"]["user_day_share"], 4),
        "reward_top6_pointwise": round(pointwise, 4), "reward_top6_distinct_tags": round(diverse, 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, contended)",
    }
    print(json.dumps(result))
    print(format_summary(summary))
    print(f"generate {gen_s:.1f} s ({result['rows_per_s']:,} rows/s), peak RSS {peak_gb:.2f} GB, "
          f"files {size_mb:.0f} MB; judge {result['judge_sessions_per_s']:,} sessions/s (m = 6)")
    print(f"judge reward, top-6 by true affinity: {pointwise:.4f}; same with distinct tags and authors: {diverse:.4f}")
    if args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
