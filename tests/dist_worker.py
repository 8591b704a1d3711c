"""Worker for tests/test_dist.py, launched with ``torchrun --nproc_per_node=2 tests/dist_worker.py ROOT``.

Runs several short trainings in one process group (one launch costs seconds on 2 cores) and writes what
the tests check into ``ROOT/worker_<rank>.json``:
- ``ddp``:  fresh DDP run (``ROOT/ddp``); each rank's trained parameters' flat vector checksum and a copy
  of rank 0's parameters for an exact cross-rank comparison (``ROOT/ddp_params_<rank>.safetensors``).
- ``fsdp``: fresh FSDP2 run (``ROOT/fsdp``).
- ``resume_from_1``: resumes ``ROOT/single_cut`` (written by 1 process, interrupted) on 2 ranks.
- ``cut_2``: a DDP run interrupted after its step-3 checkpoint (``ROOT/cut_2``), resumed later by 1 process.
- ``fsdp_select`` / ``ddp_select``: runs selecting weights by validation recall@5 (beam search on rank 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from onerec import dist as D
from onerec.train import fit, prepare_run


SELECT = ('train.select_metric="recall@5"', "train.select_beam=8", "train.eval_every=2")  # ranking selection


class Interrupt(Exception):
    pass


def run(root: Path, name: str, info: D.DistInfo, overrides: tuple[str, ...] = (), resume: bool = False,
        cut_at: int = 0) -> torch.nn.Module:
    out = root / name
    p = prepare_run(root / "data", root / "tok", root / "tiny_train.toml", out, None, overrides, resume)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    D.barrier()

    def on_step(step: int) -> None:
        if cut_at and step == cut_at:
            raise Interrupt

    try:
        fit(p.model, p.train, p.valid, p.config, out, p.run_info, info, resume=resume, on_step=on_step)
    except Interrupt:
        pass
    return p.model


def main() -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    overrides = tuple(sys.argv[2:])
    info = D.init_distributed("cpu")
    report = {"rank": info.rank, "world_size": info.world_size}
    model = run(root, "ddp", info, overrides + ("train.strategy=ddp",))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(root / f"ddp_params_{info.rank}.safetensors"))
    run(root, "fsdp", info, overrides + ("train.strategy=fsdp",))
    run(root, "single_cut", info, overrides, resume=True)
    run(root, "cut_2", info, overrides, cut_at=3)
    run(root, "fsdp_select", info, overrides + SELECT + ("train.strategy=fsdp",))
    run(root, "ddp_select", info, overrides + SELECT)
    (root / f"worker_{info.rank}.json").write_text(json.dumps(report))
    D.teardown()


if __name__ == "__main__":
    main()
