"""Trainer speed and memory: MFU of `small` through the real loop, samples/s at 1 and 2 ranks, and memory
per rank with DDP vs FSDP2 on `base`.

    .venv/bin/python benchmarks/bench_train.py                    # everything (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_train.py --skip-memory      # MFU + scaling only

1. fp32 matmul peak of this machine, now, at 1 and 2 threads (best of several 2048^2 ``torch.mm``).
2. Samples/s and MFU of ``configs/small.toml`` trained by ``onerec.train.fit`` itself (collate, forward,
   backward, clipping, AdamW, logging) at 1 rank x 1 thread, 1 rank x 2 threads and 2 ranks x 1 thread
   (torchrun, gloo; DDP and FSDP2), same global batch and micro-batches (1 rank accumulates 2). Model FLOPs
   per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward+backward of the
   batch. MFU (wall) = FLOPs / median wall step time / the wall-clock matmul peak of as many threads; on a
   shared, loaded machine both terms are depressed by other processes, so the benchmark also reports MFU
   per CPU-second = FLOPs / CPU seconds the training processes used per step (all ranks) / the matmul
   FLOPs per CPU-second of one thread — contention does not enter it, thread spin-waiting does.
3. `base` (K = 8192 x 3 levels + 64 dedup, history 256, m = 10; ~101M parameters) on 2 ranks with DDP and
   FSDP2, micro-batch 1: the parameter bytes each rank holds (measured from its local tensors), the
   training state that implies (params + grads + 2 AdamW moments = 4x, fp32), and peak RSS per rank
   (``ru_maxrss``, includes the Python/torch runtime and activations).

Data are synthetic (random items; full-length histories, full sessions) so shapes are the configs' maxima.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onerec import dist as D  # noqa: E402
from onerec.batching import Ragged, SampleTable, collate  # noqa: E402
from onerec.config import load_section  # noqa: E402
from onerec.model.onerec import ModelConfig, OneRec  # noqa: E402
from onerec.train import TrainConfig, fit  # noqa: E402

TOKENIZERS = {"small": ([256, 256, 256, 4], 20_000), "base": ([8192, 8192, 8192, 64], 100_000)}


class _Stop(Exception):
    pass


def matmul_peak(n: int = 2048, repeats: int = 8, clock=time.perf_counter) -> float:
    """Best FLOPs per second (per CPU-second with ``clock=time.process_time``) of an n x n fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t = clock()
        torch.mm(a, b)
        best = min(best, clock() - t)
    return 2.0 * n**3 / best


def synthetic(n: int, n_items: int, hist: int, m: int, seed: int = 0) -> SampleTable:
    """``n`` samples with full-length histories and sessions of random distinct-ish items."""
    rng = np.random.default_rng(seed)
    def ragged(width: int) -> Ragged:
        return Ragged(rng.integers(0, n_items, n * width).astype(np.int64), np.arange(n + 1, dtype=np.int64) * width)
    ts = Ragged(np.tile(np.arange(hist, dtype=np.int64) * 1000, n), np.arange(n + 1, dtype=np.int64) * hist)
    return SampleTable(history=ragged(hist), history_ts=ts, target=ragged(m), sample=np.arange(n))


def build(name: str) -> OneRec:
    cfg = load_section(ModelConfig, "model", REPO / "configs" / f"{name}.toml", ["model.dropout=0.0"])
    sizes, n_items = TOKENIZERS[name]
    codes = np.stack([np.random.default_rng(j).integers(0, s, n_items) for j, s in enumerate(sizes)], 1)
    return OneRec(cfg, SimpleNamespace(codes=codes, level_sizes=sizes))


def train_steps(name: str, info: D.DistInfo, strategy: str, steps: int, batch: int, micro: int, out: Path,
                stop_at: int = 0) -> dict:
    """Run ``fit`` on synthetic data; returns per-step times and memory figures (at ``stop_at`` if given)."""
    model = build(name)
    n_params = sum(p.numel() for p in model.parameters())
    c = model.config
    table = synthetic(batch * steps, model.n_items, c.max_history, c.max_session_items)
    cfg = TrainConfig(batch_size=batch, micro_batch_size=micro, max_steps=steps, warmup_steps=1, epochs=1,
                      save_every=10**9, log_every=1, progress=False, tensorboard=False, strategy=strategy)
    report: dict = {}
    marks: list[tuple[float, float]] = []  # (wall, this process's CPU time) after each step

    def on_step(step: int) -> None:
        marks.append((time.perf_counter(), time.process_time()))
        if step == stop_at:
            local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
            report["param_bytes_per_rank"] = sum(t.numel() * t.element_size() for t in local)
            report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            raise _Stop

    out.mkdir(parents=True, exist_ok=True)
    try:
        fit(model, table, None, cfg, out, {}, info, on_step=on_step)
    except _Stop:
        pass
    report["step_wall"] = [b[0] - a[0] for a, b in zip(marks, marks[1:])]  # steps 2.. (step 1 has no start mark)
    report["step_cpu"] = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    report["params"] = n_params
    return report


def count_step_flops(model: OneRec, table: SampleTable, batch: int) -> float:
    """Matmul FLOPs of one forward + backward on ``batch`` samples on the model's device (FlopCounterMode, exact
    for mm/bmm/sdpa)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    b = collate(table, np.arange(batch), model.config.max_history, model.config.max_session_items)
    b = {k: v.to(device) for k, v in b.items()}
    with FlopCounterMode(display=False) as counter:
        model(**b).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def worker(args: argparse.Namespace) -> None:
    """Under torchrun: one training of ``args.model`` with ``args.strategy``; rank 0 writes JSON, others too."""
    torch.set_num_threads(1)
    info = D.init_distributed("cpu")
    out = Path(args.out)
    rep = train_steps(args.model, info, args.strategy, args.steps, args.batch, args.micro, out / "run",
                      stop_at=args.stop_at)
    (out / f"rank{info.rank}.json").write_text(json.dumps(rep))
    D.teardown()


def launch(model: str, strategy: str, steps: int, batch: int, micro: int, stop_at: int = 0) -> list[dict]:
    with tempfile.TemporaryDirectory(dir=REPO / "runs" if (REPO / "runs").is_dir() else None) as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
               "--worker", "--model", model, "--strategy", strategy, "--steps", str(steps), "--batch", str(batch),
               "--micro", str(micro), "--stop-at", str(stop_at), "--out", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            raise SystemExit(f"torchrun failed:\n{proc.stderr[-4000:]}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in (0, 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--model", default="small")
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--micro", type=int, default=32)
    ap.add_argument("--stop-at", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    result: dict = {"machine": f"{os.cpu_count()} CPUs (shared, contended), torch {torch.__version__}",
                    "load_average_1min_at_start": os.getloadavg()[0], "config": "small",
                    "global_batch": args.batch, "micro_batch": args.micro}
    peaks = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        peaks[threads] = matmul_peak()
    torch.set_num_threads(1)
    peak_cpu = matmul_peak(clock=time.process_time)  # FLOPs per CPU-second of one core: contention-free
    result["matmul_peak_gflops"] = {f"{t} thread(s)": p / 1e9 for t, p in peaks.items()}
    result["matmul_peak_gflops_per_cpu_second"] = peak_cpu / 1e9
    model = build("small")
    table = synthetic(args.batch, model.n_items, model.config.max_history, model.config.max_session_items)
    flops = count_step_flops(model, table, args.batch)
    result["small_params"] = sum(p.numel() for p in model.parameters())
    result["step_gflops_counted"] = flops / 1e9
    result["step_gflops_analytic"] = 3 * model.forward_flops(args.batch, model.config.max_history,
                                                             model.config.max_session_items) / 1e9
    settings: dict[str, tuple[float, float, int]] = {}  # setting -> (wall s/step, CPU s/step all ranks, cores)
    skip = max(0, args.warmup - 1)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            rep = train_steps("small", D.DistInfo(), "ddp", args.steps, args.batch, args.micro, Path(tmp))
        settings[f"1 rank x {threads} thread(s)"] = (statistics.median(rep["step_wall"][skip:]),
                                                     statistics.median(rep["step_cpu"][skip:]), threads)
    if not args.skip_scaling:
        for strategy in ("ddp", "fsdp"):
            reps = launch("small", strategy, args.steps, args.batch, args.micro)
            cpu = [a + b for a, b in zip(reps[0]["step_cpu"], reps[1]["step_cpu"])]
            settings[f"2 ranks x 1 thread ({strategy})"] = (statistics.median(reps[0]["step_wall"][skip:]),
                                                            statistics.median(cpu[skip:]), 2)
    torch.set_num_threads(2)
    result["samples_per_s"] = {k: args.batch / w for k, (w, _, _) in settings.items()}
    result["mfu_wall"] = {k: flops / w / peaks[cores] for k, (w, _, cores) in settings.items()}
    result["mfu_cpu_time"] = {k: flops / c / peak_cpu for k, (_, c, _) in settings.items()}

    if not args.skip_memory:
        result["base_memory"] = {}
        for strategy in ("ddp", "fsdp"):
            reps = launch("base", strategy, steps=3, batch=2, micro=1, stop_at=2)
            result["base_memory"][strategy] = {
                "params": reps[0]["params"],
                "param_bytes_per_rank": [r["param_bytes_per_rank"] for r in reps],
                "train_state_bytes_per_rank": [4 * r["param_bytes_per_rank"] for r in reps],
                "peak_rss_bytes_per_rank": [r["peak_rss_bytes"] for r in reps],
            }

    print(f"machine                      {result['machine']}, load average {result['load_average_1min_at_start']:.1f}")
    print("fp32 matmul peak             " + ", ".join(f"{v:.1f} GFLOP/s ({k})"
                                                    for k, v in result["matmul_peak_gflops"].items())
          + f", {peak_cpu / 1e9:.1f} GFLOP per CPU-second (1 thread)")
    print(f"small: {result['small_params'] / 1e6:.1f}M params, global batch {args.batch} (micro {args.micro}), "
          f"step FLOPs counted {result['step_gflops_counted']:.1f} G (analytic {result['step_gflops_analytic']:.1f} G)")
    for k, v in result["samples_per_s"].items():
        print(f"{k:30s} {v:8.1f} samples/s   MFU {100 * result['mfu_wall'][k]:5.1f} % wall-clock, "
              f"{100 * result['mfu_cpu_time'][k]:5.1f} % per CPU-second")
    for strategy, mem in result.get("base_memory", {}).items():
        gib = 2**30
        print(f"base {strategy:4s}: {mem['params'] / 1e6:.1f}M params; per rank: params "
              f"{[round(b / gib, 3) for b in mem['param_bytes_per_rank']]} GiB, train state (4x) "
              f"{[round(b / gib, 2) for b in mem['train_state_bytes_per_rank']]} GiB, peak RSS "
              f"{[round(b / gib, 2) for b in mem['peak_rss_bytes_per_rank']]} GiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
