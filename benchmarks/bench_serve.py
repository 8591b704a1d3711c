"""Serving load test: a bounded load generator against the real HTTP server on loopback.

    .venv/bin/python benchmarks/bench_serve.py [--run RUN] [--requests 5000] [--requests-no-batching 500]
        [--concurrency 1 8 32]

Without ``--run`` it writes a run directory holding a ``small``-config model (configs/small.toml, random
weights: latency depends on the shapes, not the values) over a catalogue of ``--items`` items with 3-level
codes (K = 256 per level + a dedup token). For each setting (micro-batching on: ``max_batch_size=32``;
off: ``max_batch_size=1``) it starts ``onerec serve``, sends a fixed number of requests at a fixed
concurrency, then stops; it reports p50/p99 latency, throughput and errors, as JSON and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_small_run(run: Path, n_items: int, seed: int = 0) -> None:
    from types import SimpleNamespace

    import polars as pl

    from onerec import checkpoint as ckpt
    from onerec.config import from_dict, to_dict
    from onerec.model.onerec import ModelConfig, OneRec
    from onerec.tokenizer.codec import assign_dedup

    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 256, size=(n_items, 3))
    dedup = assign_dedup(levels)
    codes = np.concatenate([levels, dedup[:, None]], 1).astype(np.int64)
    sizes = [256, 256, 256, int(dedup.max()) + 1]
    table = tomllib.loads((REPO / "configs" / "small.toml").read_text())["model"]
    cfg = from_dict(ModelConfig, table, "model")
    model = OneRec(cfg, SimpleNamespace(codes=codes, level_sizes=sizes))
    run.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item": np.arange(n_items, dtype=np.int32),
                  "item_orig": [str(i) for i in range(n_items)]}).write_parquet(run / "items.parquet")
    sha = ckpt.save_weights(model.state_dict(), run / ckpt.WEIGHTS)
    ckpt.write_run_info(run, {"model_config": to_dict(cfg), "level_sizes": sizes, "n_items": n_items,
                              "weights_sha256": sha, "version": "bench-small"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, max_batch: int, wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "onerec.cli", "serve", "--run", str(run), "--port", str(port),
         "--set", f"serve.max_batch_size={max_batch}", "--set", f"serve.max_wait_ms={wait_ms}",
         "--set", "serve.reload_poll_s=0"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def load(base: str, n_requests: int, concurrency: int, n_items: int, beam: int, catalogue: int,
               seed: int) -> dict:
    rng = np.random.default_rng(seed)
    histories = [rng.integers(0, catalogue, size=int(rng.integers(5, 50))).astype(str).tolist()
                 for _ in range(n_requests)]
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < n_requests:
            i = next_index
            next_index += 1
            start = time.perf_counter()
            try:
                r = await client.post(f"{base}/v1/recommend",
                                      json={"history": histories[i], "n_items": n_items, "beam_size": beam})
                ok = r.status_code == 200 and len(set(r.json()["items"])) == n_items
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += 0 if ok else 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {"requests": n_requests, "concurrency": concurrency, "errors": errors, "wall_s": round(wall, 2),
            "throughput_rps": round(n_requests / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=5000, help="requests per row with micro-batching")
    parser.add_argument("--requests-no-batching", type=int, default=0,
                        help="requests per row without micro-batching (0 = --requests); those rows only set the "
                             "baseline throughput, so fewer keep the run short")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--n-items", type=int, default=10)
    parser.add_argument("--beam", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            make_small_run(run, args.items)
        catalogue = int(json.loads((run / "run.json").read_text())["n_items"])
        rows = []
        for label, max_batch in (("micro-batching", 32), ("no batching", 1)):
            proc, base = start_server(run, max_batch, wait_ms=4.0)
            try:
                for conc in args.concurrency:
                    if max_batch == 1 and conc not in (1, max(args.concurrency)):
                        continue
                    n = args.requests if max_batch > 1 else (args.requests_no_batching or args.requests)
                    stats = asyncio.run(load(base, n, conc, args.n_items, args.beam, catalogue, seed=conc))
                    rows.append({"setting": label, **stats})
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    top = max(args.concurrency)
    on = next(r for r in rows if r["setting"] == "micro-batching" and r["concurrency"] == top)
    off = next(r for r in rows if r["setting"] == "no batching" and r["concurrency"] == top)
    summary = {"machine": f"{os.cpu_count()} cores", "model": "small", "n_items": args.n_items, "beam": args.beam,
               "rows": rows, f"speedup_at_{top}": round(on["throughput_rps"] / off["throughput_rps"], 2)}
    print(json.dumps(summary))
    print(f"\n{'setting':<16}{'conc':>6}{'req':>7}{'err':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    for r in rows:
        print(f"{r['setting']:<16}{r['concurrency']:>6}{r['requests']:>7}{r['errors']:>5}"
              f"{r['p50_ms']:>9}{r['p99_ms']:>9}{r['throughput_rps']:>8}")
    print(f"throughput micro-batching / none at concurrency {top}: {summary[f'speedup_at_{top}']}x; "
          f"{sum(r['errors'] for r in rows)} errors over {sum(r['requests'] for r in rows)} requests")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
