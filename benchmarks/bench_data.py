"""Benchmark of `onerec data prepare`: the real KuaiRand-Pure log, and a large log built from it.

    .venv/bin/python benchmarks/bench_data.py                 # real log + 10M-row synthetic log
    .venv/bin/python benchmarks/bench_data.py --rows 2000000  # a smaller synthetic log
    .venv/bin/python benchmarks/bench_data.py --rows 0        # real log only

The large log repeats the real rows (with their prior histories and user features) as new users
(user ids offset per copy) and perturbs each copy: timestamps jittered by up to +-60 s, play time scaled
by a factor in [0.8, 1.2]. numpy default_rng(seed). Each prepare runs in a child process, which reports
its wall time, CPU time and peak resident memory (resource.getrusage ru_maxrss). Prints a table and a
JSON line. Needs ../shared/datasets/kuairand_pure (or $ONEREC_DATASETS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _datasets() -> Path:
    env = os.environ.get("ONEREC_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def build_large(src: Path, dst: Path, rows: int, seed: int) -> int:
    """Write a KuaiRand-layout folder with ``rows`` log rows made from the real ones; return the row count."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    log = pl.read_csv(next(src.glob("log_standard_*.csv*")))
    users = pl.read_csv(next(src.glob("user_features_*.csv*")))
    copies = -(-rows // log.height)
    offset = int(max(log["user_id"].max(), users["user_id"].max())) + 1
    big = pl.concat([log] * copies).head(rows)
    copy = np.repeat(np.arange(copies, dtype=np.int64), log.height)[:rows]  # (N,)
    jitter = rng.integers(-60_000, 60_001, rows)  # (N,)
    scale = rng.uniform(0.8, 1.2, rows)  # (N,)
    big = big.with_columns(
        (pl.col("user_id") + pl.Series(copy) * offset).alias("user_id"),
        (pl.col("time_ms") + pl.Series(jitter)).alias("time_ms"),
        (pl.col("play_time_ms") * pl.Series(scale)).round(0).cast(pl.Int64).alias("play_time_ms"),
    )
    big.write_csv(dst / "log_standard_4_25_to_5_08_large.csv")
    del big
    pl.concat([users.with_columns(pl.col("user_id") + c * offset) for c in range(copies)]).write_csv(
        dst / "user_features_large.csv")
    for pattern in ("video_features_basic_*", "video_features_statistic_*"):
        f = next(src.glob(pattern))
        shutil.copy(f, dst / f.name)
    prior = next(src.glob("user_recent_history_*.jsonl*"), None)
    if prior is not None:
        hist = pl.read_ndjson(prior)
        pl.concat([hist.with_columns(pl.col("user_id") + c * offset) for c in range(copies)]).write_ndjson(
            dst / "user_recent_history_large.jsonl")
    return rows


def child(folder: Path, out: Path) -> None:
    """Run one prepare with configs/kuairand.toml and print its measurements as JSON."""
    from onerec.config import load_section
    from onerec.data import DataConfig
    from onerec.data.prepare import prepare

    cfg = load_section(DataConfig, "data", REPO / "configs" / "kuairand.toml")
    t0 = time.perf_counter()
    s = prepare(cfg, folder, out)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "rows": s["quirks"]["rows_read"], "interactions": s["interactions"], "sessions": s["sessions"]["built"],
        "samples": s["samples"]["total"], "wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_mb": round(ru.ru_maxrss / 1024),
    }))


def measure(folder: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(folder), str(out)], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"prepare failed on {folder}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the synthetic log (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_data")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    real = _datasets() / "kuairand_pure"
    if not real.is_dir():
        raise SystemExit(f"real data not found at {real} (set ONEREC_DATASETS)")
    results = {"machine": f"{os.cpu_count()} cores (shared, contended)", "load_avg": os.getloadavg()[0]}
    results["real"] = measure(real, args.work / "real")
    if args.rows:
        large = args.work / "large_in"
        t0 = time.perf_counter()
        build_large(real, large, args.rows, args.seed)
        results["build_large_s"] = round(time.perf_counter() - t0, 1)
        results["large"] = measure(large, args.work / "large")
        shutil.rmtree(large, ignore_errors=True)
        shutil.rmtree(args.work / "large", ignore_errors=True)
    print(f"{'log':<10}{'rows':>12}{'sessions':>12}{'samples':>12}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}")
    for name in ("real", "large"):
        if name in results:
            r = results[name]
            print(f"{name:<10}{r['rows']:>12,}{r['sessions']:>12,}{r['samples']:>12,}{r['wall_s']:>9}"
                  f"{r['cpu_s']:>9}{r['peak_rss_mb']:>9,}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
