"""OneRec on one GPU: training throughput and MFU of `small` and `base` through the real loop, and beam search
sessions/s (KV cache vs full recompute, identical output asserted), in fp32 and under bf16 autocast.

    python benchmarks/bench_gpu.py [--json OUT]                      # on a CUDA machine (a few minutes)
    python benchmarks/bench_gpu.py --device cpu --configs small --steps 3 --beams 4 --requests 2   # smoke run

1. Matmul peaks on the device, measured in the same run: bf16 and fp32 (TF32 off) square ``torch.mm``
   (mean of 10 after 3 warm-ups; n = 8192 on CUDA).
2. Training: ``onerec.train.fit`` itself (host-side collate, forward, backward, clipping, AdamW, per-step
   logging) on synthetic full-length data (bench_train.synthetic) with bf16 autocast, each config's global /
   micro batch; median step time after 2 warm-up steps; model FLOPs per step counted by ``FlopCounterMode``
   on one micro-batch (x accumulation); MFU = FLOPs / step time / bf16 peak. The host-side collate time of one
   global batch is reported beside it (it runs in the training process, not in a loader).
3. Beam search (``generate_sessions``, m = 10 items per session, full-length histories): cached vs full
   recompute on 16 requests x beam 16 (identical sessions asserted) and the cached search's sessions/s
   (requests x beam / seconds; best of 3 after a warm-up) at beams 16, 32 and 128, in fp32 (TF32 off) and
   under bf16 autocast (the share of requests whose top session equals fp32's is reported).
Tokenizers are random: `small` K = 256 x 3 over 20k items, `base` K = 8192 x 3 over 100k items
(bench_train.TOKENIZERS; the search's catalogue gets a real dedup level, so item <-> code is one-to-one). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import TOKENIZERS, build, count_step_flops, synthetic  # noqa: E402

from onerec import dist as D  # noqa: E402
from onerec.batching import collate  # noqa: E402
from onerec.config import load_section  # noqa: E402
from onerec.model.generate import DecodeMode, TrieCounts, generate_sessions  # noqa: E402
from onerec.model.onerec import ModelConfig, OneRec  # noqa: E402
from onerec.tokenizer.codec import SemanticIds  # noqa: E402
from onerec.tokenizer.trie import CodeTrie  # noqa: E402
from onerec.train import TrainConfig, fit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    _sync(device)
    t = time.perf_counter()
    for _ in range(10):
        torch.mm(a, b)
    _sync(device)
    return 2.0 * n**3 * 10 / (time.perf_counter() - t)


def bench_train(name: str, info: D.DistInfo, steps: int, peak: float, batch: int = 0, micro: int = 0) -> dict:
    """``batch`` / ``micro`` = 0: the config's global / micro batch."""
    model = build(name)
    tcfg = load_section(TrainConfig, "train", REPO / "configs" / f"{name}.toml")
    batch = batch or tcfg.batch_size
    micro = micro or tcfg.micro_batch_size or batch
    c = model.config
    table = synthetic(batch * steps, model.n_items, c.max_history, c.max_session_items)
    flops = count_step_flops(model.to(info.device), table, micro) * (batch // micro)
    model = build(name)
    cfg = TrainConfig(batch_size=batch, micro_batch_size=micro, max_steps=steps, warmup_steps=1, epochs=1,
                      save_every=10**9, log_every=1, progress=False, tensorboard=False, precision="bf16")
    marks: list[float] = []

    def on_step(step: int) -> None:
        _sync(info.device)
        marks.append(time.perf_counter())

    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, table, None, cfg, Path(tmp), {}, info, on_step=on_step)
    step_s = statistics.median(b - a for a, b in list(zip(marks, marks[1:]))[2:])
    t = time.perf_counter()
    for start in range(0, batch, micro):
        collate(table, np.arange(start, start + micro), c.max_history, c.max_session_items)
    collate_s = time.perf_counter() - t
    tokens = batch * (c.max_history + c.max_session_items * (model.depth + 1))  # encoder + decoder positions
    return {"config": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch, "micro": micro,
            "history": c.max_history, "session_items": c.max_session_items, "step_s": step_s,
            "samples_per_s": batch / step_s, "positions_per_s": tokens / step_s,
            "step_tflops": flops / 1e12, "model_tflops_per_s": flops / step_s / 1e12, "mfu_bf16": flops / step_s / peak,
            "collate_s_per_step": collate_s,
            "peak_mem_gib": torch.cuda.max_memory_allocated(info.device) / 2**30 if info.device.type == "cuda" else None}


def bench_generation(name: str, device: torch.device, beams: list[int], requests: int, m: int) -> dict:
    sizes, n_items = TOKENIZERS[name]
    levels = len(sizes) - 1
    rng = np.random.default_rng(0)
    ids = SemanticIds.from_levels(rng.integers(0, sizes[0], size=(n_items, levels)), sizes[0])  # one-to-one
    cfg = load_section(ModelConfig, "model", REPO / "configs" / f"{name}.toml", ["model.dropout=0.0"])
    model = OneRec(cfg, ids).to(device).eval()
    trie = CodeTrie.from_codes(ids.codes, ids.level_sizes).to(device)
    counts = TrieCounts(trie, model.item_codes)
    g = torch.Generator().manual_seed(2)
    history = torch.randint(0, model.n_items, (requests, model.config.max_history), generator=g).to(device)

    def run(hist, beam, mode=DecodeMode.CACHED):
        out = generate_sessions(model, trie, hist, m, beam, mode=mode, counts=counts)
        _sync(device)
        return out

    def best(fn, repeats=3):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    out: dict = {"config": name, "requests": requests, "session_items": m, "history": model.config.max_history}
    with torch.no_grad():
        hist = history[:16]
        cached, full = run(hist, 16), run(hist, 16, DecodeMode.FULL)
        assert torch.equal(cached.items, full.items), "cached and full-recompute search disagree"
        t_c, t_f = best(lambda: run(hist, 16)), best(lambda: run(hist, 16, DecodeMode.FULL))
        out["cache_vs_full"] = {"requests": 16, "beam": 16, "cached_s": t_c, "full_s": t_f, "speedup": t_f / t_c,
                                "identical": True}
        out["fp32"], out["bf16"] = {}, {}
        for beam in beams:
            ref = run(history, beam)
            t = best(lambda: run(history, beam))
            out["fp32"][str(beam)] = {"seconds": t, "sessions_per_s": requests * beam / t}
            with torch.autocast(device.type, dtype=torch.bfloat16):
                low = run(history, beam)
                t = best(lambda: run(history, beam))
            same = (low.items[:, 0] == ref.items[:, 0]).all(dim=1).float().mean().item()
            out["bf16"][str(beam)] = {"seconds": t, "sessions_per_s": requests * beam / t, "top1_same_as_fp32": same}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--configs", default="small,base")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--beams", default="16,32,128")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--batch", type=int, default=0, help="global batch (0: each config's)")
    p.add_argument("--micro", type=int, default=0, help="micro-batch (0: each config's)")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    info = D.init_distributed(args.device)
    dev = info.device
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192 if dev.type == "cuda" else 512
    result: dict = {"torch": torch.__version__,
                    "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}",
                    "peak_tflops": {"bf16": matmul_peak(dev, torch.bfloat16, n) / 1e12,
                                    "fp32": matmul_peak(dev, torch.float32, n) / 1e12},
                    "train": [], "generation": []}
    names = args.configs.split(",")
    for name in names:
        result["train"].append(bench_train(name, info, args.steps, result["peak_tflops"]["bf16"] * 1e12,
                                           args.batch, args.micro))
        print(json.dumps(result["train"][-1]), flush=True)
    for name in [] if args.skip_generation else names:
        result["generation"].append(bench_generation(name, dev, [int(b) for b in args.beams.split(",")],
                                                     args.requests, args.m))
        print(json.dumps(result["generation"][-1]), flush=True)
    print(f"\n{result['device']}, torch {result['torch']}: matmul peak bf16 {result['peak_tflops']['bf16']:.0f} "
          f"TFLOP/s, fp32 {result['peak_tflops']['fp32']:.0f} TFLOP/s")
    print(f"{'config':8} {'params':>8} {'batch':>6} {'step s':>7} {'samples/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'collate s':>9} {'mem GiB':>8}")
    for r in result["train"]:
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{r['config']:8} {r['params'] / 1e6:7.1f}M {r['batch']:6} {r['step_s']:7.3f} {r['samples_per_s']:10.0f} "
              f"{r['model_tflops_per_s']:8.1f} {r['mfu_bf16']:6.1%} {r['collate_s_per_step']:9.3f} {mem:>8}")
    print(f"\n{'config':8} {'beam':>5} {'fp32 sessions/s':>16} {'bf16 sessions/s':>16} {'bf16 top-1 = fp32':>18}")
    for g in result["generation"]:
        for beam, r in g["fp32"].items():
            b = g["bf16"][beam]
            print(f"{g['config']:8} {beam:>5} {r['sessions_per_s']:16.0f} {b['sessions_per_s']:16.0f} "
                  f"{b['top1_same_as_fp32']:18.0%}")
        cv = g["cache_vs_full"]
        print(f"{g['config']:8} KV cache vs full recompute (16 requests x beam 16): {cv['speedup']:.1f}x, identical")
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
