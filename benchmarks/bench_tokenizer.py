"""Tokenizer benchmark: balanced K-means (fast, and the paper's Algorithm 1) against faiss k-means.

Run (the figures in README.md came from these, on the shared 2-core machine):
    .venv/bin/python benchmarks/bench_tokenizer.py --n 100000 --dim 64 --k 256 --levels 3
    .venv/bin/python benchmarks/bench_tokenizer.py --n 20000 --dim 64 --k 128 --levels 1 --paper
    .venv/bin/python benchmarks/bench_tokenizer.py --n 1000000 --dim 64 --k 1024 --levels 3 --methods balanced

Data: a seeded Gaussian mixture (``--blobs`` unequal blobs plus unit noise), float32, or ``--embeddings
FILE`` (.npy). Per method it reports wall time, the level-0 within-cluster SSE (the k-means
objective), min/max cluster size at every level, the final residual MSE, CPU seconds (user + system
of the process during the method: on a shared machine the wall time mostly measures the other jobs)
and peak RSS of the process (``ru_maxrss``; one method per process gives that method's peak). Prints a
table and one JSON line. ``--threads`` sets faiss' OpenMP threads, which the balanced method's
candidate search (``kmeans.nearest_clusters``) follows too.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mixture(n: int, dim: int, blobs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(blobs, dim)).astype(np.float32) * 2
    weights = rng.dirichlet(np.ones(blobs))
    x = rng.standard_normal(size=(n, dim), dtype=np.float32)
    x += centers[rng.choice(blobs, size=n, p=weights)]
    return x


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(method: str, x: np.ndarray, k: int, levels: int, seed: int, iters: int) -> dict:
    from onerec.tokenizer.balanced import fit_balanced_level, paper_balanced_kmeans
    from onerec.tokenizer.kmeans import fit_kmeans_level, residual_quantize

    fits = {
        "kmeans": lambda r, lv: fit_kmeans_level(r, k, seed + lv, iters=20),
        "balanced": lambda r, lv: fit_balanced_level(r, k, seed + lv, iters=iters),
        "paper": lambda r, lv: paper_balanced_kmeans(r, k, seed + lv, max_iters=iters),
    }
    level_sse: list[float] = []

    def fit(r: np.ndarray, level: int):
        centroids, assign = fits[method](r, level)
        level_sse.append(float(np.sum((r - centroids[assign]).astype(np.float64) ** 2)))
        return centroids, assign

    start, cpu = time.perf_counter(), _cpu_seconds()
    result = residual_quantize(x, levels, fit)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    sizes = [np.bincount(result.codes[:, lv], minlength=k) for lv in range(levels)]
    return {
        "method": method,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "sse_level0": level_sse[0],
        "sse_per_level": level_sse,
        "size_min": [int(s.min()) for s in sizes],
        "size_max": [int(s.max()) for s in sizes],
        "used": [int((s > 0).sum()) for s in sizes],
        "residual_mse": result.residual_mse,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--blobs", type=int, default=100)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, default=None, help=".npy embeddings instead of the mixture")
    parser.add_argument("--methods", default="kmeans,balanced", help="comma list of kmeans, balanced, paper")
    parser.add_argument("--paper", action="store_true", help="also run the paper's Algorithm 1 (slow)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.embeddings is not None:
        x = np.load(args.embeddings, allow_pickle=False).astype(np.float32)
    else:
        x = mixture(args.n, args.dim, args.blobs, args.seed)
    methods = args.methods.split(",") + (["paper"] if args.paper and "paper" not in args.methods else [])
    rows = [run(m, x, args.k, args.levels, args.seed, args.iters) for m in methods]
    print(f"N={x.shape[0]} d={x.shape[1]} K={args.k} L={args.levels} threads={args.threads}")
    print(f"{'method':<10}{'time s':>9}{'CPU s':>9}{'SSE lvl0':>14}{'sizes min..max per level':>34}"
          f"{'final res MSE':>15}{'peak GB':>9}")
    for r in rows:
        sizes = " ".join(f"{a}..{b}" for a, b in zip(r["size_min"], r["size_max"]))
        print(f"{r['method']:<10}{r['seconds']:>9.1f}{r['cpu_seconds']:>9.1f}{r['sse_level0']:>14.4g}{sizes:>34}"
              f"{r['residual_mse'][-1]:>15.4g}{r['peak_rss_gb']:>9.2f}")
    by = {r["method"]: r for r in rows}
    if "kmeans" in by and "balanced" in by:
        print(f"balanced / kmeans time: {by['balanced']['seconds'] / by['kmeans']['seconds']:.2f}x")
    print(json.dumps({"n": int(x.shape[0]), "dim": int(x.shape[1]), "k": args.k, "levels": args.levels,
                      "results": rows}))


if __name__ == "__main__":
    main()
