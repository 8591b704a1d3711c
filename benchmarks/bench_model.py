"""Model speed: training MFU and generation with / without the KV cache (issue 5 speed targets).

Run:  .venv/bin/python benchmarks/bench_model.py --config configs/small.toml [--threads 2] [--json OUT]

Measures, on a synthetic catalogue (random semantic IDs, K codes per level, L levels + dedup):
1. forward + backward of the config's model: code tokens/s, samples/s, model FLOPs/s
   (``OneRec.forward_flops`` x 3 for the backward) and MFU = model FLOPs/s / fp32 matmul peak, the peak
   (best of 5 square 1024 ``torch.mm``) measured right before each timed step; median over the pairs;
2. beam search: KV-cached vs full-recompute decoder (identical sessions asserted; runs alternate, median
   of the paired speedups, in wall time and in CPU time (``time.process_time``, which other processes on a
   shared machine disturb less)) for 4 requests x beam 16 and 1 request x beam 128 with m items, and 4
   requests x beam 16 with m = 10 (the cache saves more on longer sessions); and the cached search's
   requests/s and sessions/s at beams 16, 32 and 128 (sessions/s = requests x beam / seconds: every
   request returns ``beam`` sessions of m items).
Prints a JSON object and a readable table. Figures depend on the (shared, contended) machine: say so.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onerec.config import load_section  # noqa: E402
from onerec.io import write_json  # noqa: E402
from onerec.model.generate import DecodeMode, TrieCounts, generate_sessions  # noqa: E402
from onerec.model.onerec import ModelConfig, OneRec  # noqa: E402
from onerec.tokenizer.codec import SemanticIds  # noqa: E402
from onerec.tokenizer.trie import CodeTrie  # noqa: E402


def _best_time(fn, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _timed_cpu(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``fn()`` call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 FLOP/s of an (n x n) @ (n x n) matmul, best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return 2.0 * n**3 / _best_time(lambda: torch.mm(a, b), repeats)


def bench_train(model: OneRec, batch: int, history_len: int, m: int, repeats: int) -> dict:
    """Forward + backward speed. MFU is measured in pairs (a matmul peak right before each step) and the
    median pair is reported, so that load from other processes hits numerator and denominator alike."""
    g = torch.Generator().manual_seed(1)
    history = torch.randint(0, model.n_items, (batch, history_len), generator=g)
    sessions = torch.randint(0, model.n_items, (batch, m), generator=g)
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(history, sessions).loss.backward()

    step()  # warm-up
    flops = 3.0 * model.forward_flops(batch, history_len, m)
    pairs = []
    for _ in range(repeats):
        peak = matmul_peak()
        pairs.append((peak, _timed(step)))
    mfus = sorted(flops / t / peak for peak, t in pairs)
    seconds = statistics.median(t for _, t in pairs)
    return {
        "batch": batch, "history_len": history_len, "session_items": m, "step_s": seconds,
        "code_tokens_per_s": batch * m * model.depth / seconds,
        "decoder_tokens_per_s": batch * m * (model.depth + 1) / seconds,
        "samples_per_s": batch / seconds,
        "positions_per_s": batch * (history_len + 1 + m * (model.depth + 1)) / seconds,  # encoder + decoder
        "model_gflops_per_s": flops / seconds / 1e9,
        "matmul_peak_gflops": [peak / 1e9 for peak, _ in pairs],
        "step_s_all": [t for _, t in pairs],
        "mfu": statistics.median(mfus), "mfu_min": mfus[0], "mfu_max": mfus[-1],
    }


def bench_generation(model: OneRec, trie: CodeTrie, requests: int, history_len: int, m: int,
                     beams: list[int], compare: list[tuple[int, int, int]], repeats: int) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(2)
    history = torch.randint(0, model.n_items, (requests, history_len), generator=g)
    counts = TrieCounts(trie, model.item_codes)
    out: dict = {"requests": requests, "history_len": history_len, "session_items": m}

    def run(hist: torch.Tensor, beam: int, mode: DecodeMode, n_items: int = m):
        return generate_sessions(model, trie, hist, n_items, beam, mode=mode, counts=counts)

    out["cache_vs_full"] = []
    for n_req, beam, n_items in compare:
        hist = history[:n_req]
        cached, full = run(hist, beam, DecodeMode.CACHED, n_items), run(hist, beam, DecodeMode.FULL, n_items)
        assert torch.equal(cached.items, full.items), "cached and full-recompute beam search disagree"
        torch.testing.assert_close(cached.logp, full.logp)
        pairs = [(_timed_cpu(lambda: run(hist, beam, DecodeMode.CACHED, n_items)),
                  _timed_cpu(lambda: run(hist, beam, DecodeMode.FULL, n_items)))
                 for _ in range(repeats)]  # alternating, so both modes see the same load
        times = [(c[0], f[0]) for c, f in pairs]
        speedups = sorted(f / c for c, f in times)
        t_cached, t_full = statistics.median(c for c, _ in times), statistics.median(f for _, f in times)
        out["cache_vs_full"].append({"requests": n_req, "beam": beam, "session_items": n_items,
                                     "cached_s": t_cached, "full_s": t_full,
                                     "speedup": statistics.median(speedups), "speedup_min": speedups[0],
                                     "speedup_max": speedups[-1], "identical": True,
                                     "cached_cpu_s": statistics.median(c[1] for c, _ in pairs),
                                     "full_cpu_s": statistics.median(f[1] for _, f in pairs),
                                     "speedup_cpu": statistics.median(f[1] / c[1] for c, f in pairs)})
    out["beams"] = {}
    for beam in beams:
        t = _best_time(lambda: run(history, beam, DecodeMode.CACHED), repeats)
        out["beams"][str(beam)] = {"seconds": t, "requests_per_s": requests / t,
                                   "sessions_per_s": requests * beam / t}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/small.toml")
    p.add_argument("--items", type=int, default=20000, help="catalogue size")
    p.add_argument("--codebook", type=int, default=256, help="K codes per level")
    p.add_argument("--levels", type=int, default=3, help="L levels (+ dedup)")
    p.add_argument("--history", type=int, default=50)
    p.add_argument("--m", type=int, default=5, help="items per session")
    p.add_argument("--batch", type=int, default=64, help="training batch")
    p.add_argument("--requests", type=int, default=4, help="requests per beam-search call")
    p.add_argument("--beams", default="16,32,128")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the matmul peak and training")
    p.add_argument("--gen-threads", type=int, default=1,
                   help="torch threads for generation (its ops are small; 1 is faster on a shared 2-core box)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = load_section(ModelConfig, "model", args.config)
    rng = np.random.default_rng(0)
    ids = SemanticIds.from_levels(rng.integers(0, args.codebook, size=(args.items, args.levels)), args.codebook)
    trie = CodeTrie.from_codes(ids.codes, ids.level_sizes)
    model = OneRec(config, ids)
    train = bench_train(model, args.batch, args.history, args.m, args.repeats)
    result = {
        "config": args.config, "model": config.__dict__, "params": model.param_counts(),
        "catalogue": {"items": args.items, "level_sizes": ids.level_sizes},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "train": train,
    }
    torch.set_num_threads(args.gen_threads)
    result["machine"]["gen_threads"] = args.gen_threads
    result["generate"] = bench_generation(model, trie, args.requests, args.history, args.m,
                                          [int(b) for b in args.beams.split(",")],
                                          [(args.requests, 16, args.m), (1, 128, args.m),
                                           (args.requests, 16, min(10, config.max_session_items))],
                                          args.repeats)
    print(json.dumps(result, indent=2))
    tr, gen = result["train"], result["generate"]
    print(f"\nmodel {args.config}: {result['params']['total'] / 1e6:.2f}M params "
          f"({result['params']['active'] / 1e6:.2f}M active), {args.threads} threads")
    print(f"fp32 matmul peak per pair    {', '.join(f'{p:.1f}' for p in tr['matmul_peak_gflops'])} GFLOP/s")
    print(f"train fwd+bwd (B={tr['batch']})       {tr['code_tokens_per_s']:9.0f} code tokens/s  "
          f"{tr['model_gflops_per_s']:7.1f} GFLOP/s  MFU {100 * tr['mfu']:.1f}% "
          f"(pairs {100 * tr['mfu_min']:.1f}..{100 * tr['mfu_max']:.1f}%)")
    for cvf in gen["cache_vs_full"]:
        print(f"{cvf['requests']} requests x beam {cvf['beam']} x m={cvf['session_items']}: "
              f"cached {cvf['cached_s']:.3f}s  full {cvf['full_s']:.3f}s  speedup {cvf['speedup']:.1f}x "
              f"(pairs {cvf['speedup_min']:.1f}..{cvf['speedup_max']:.1f}x; CPU time {cvf['speedup_cpu']:.1f}x; "
              f"identical sessions)")
    for beam, row in gen["beams"].items():
        print(f"beam {beam:>4}: {row['requests_per_s']:8.2f} requests/s  {row['sessions_per_s']:9.1f} sessions/s "
              f"({gen['requests']} requests x m={gen['session_items']})")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
