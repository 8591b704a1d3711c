"""Worker for tests/test_dist_stages.py: ``torchrun --nproc_per_node=2 tests/dist_stages_worker.py ROOT``.

One process group (a launch costs seconds on 2 cores) for every 2-rank run the tests check; ``ROOT/configs.json``
holds the reward and align configs of the 1-process references. Each rank writes what it holds afterwards:
- ``reward_<strategy>``: ``train_reward`` with DDP / FSDP2 (rank 0 writes ``ROOT/reward_<strategy>/``); each
  rank's trained weights ``ROOT/reward_<strategy>_rank<r>.safetensors`` and train log ``..._rank<r>.json``.
- ``round_<strategy>``: ``train_round`` on the 1-process reference's pairs (``ROOT/align_1/round_1``) with
  DDP / FSDP2; each rank's policy weights and train log, as above.
- ``align_ddp``: ``run_alignment`` end to end (rank 0 samples, evaluates, writes ``ROOT/align_ddp/``); each
  rank's returned table ``ROOT/align_ddp_rank<r>.json``.
- ``main_only``: the error each rank sees when rank 0's work fails (``ROOT/main_only_rank<r>.txt``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import polars as pl
import torch


def _dump(root: Path, name: str, rank: int, model: torch.nn.Module, log: object) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(root / f"{name}_rank{rank}.safetensors"))
    (root / f"{name}_rank{rank}.json").write_text(json.dumps(log))


def main() -> None:
    from onerec import dist as D
    from onerec.align.dpo import AlignConfig, load_policy, run_alignment, train_round
    from onerec.batching import SampleTable, seed_samples
    from onerec.config import from_dict
    from onerec.io import OnerecError
    from onerec.reward import RewardConfig
    from onerec.reward.train import train_reward

    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    data = root / "data"
    configs = json.loads((root / "configs.json").read_text())
    info = D.init_distributed("cpu")
    reward_cfg = from_dict(RewardConfig, configs["reward"], "reward")
    for strategy in ("ddp", "fsdp"):
        model = train_reward(data, root / f"reward_{strategy}", dataclasses.replace(reward_cfg, strategy=strategy))
        _dump(root, f"reward_{strategy}", info.rank, model, model.meta["train_log"])

    align_cfg = from_dict(AlignConfig, configs["align"], "align")
    pairs = pl.read_parquet(root / "align_1" / "round_1" / "pairs.parquet").drop("round")
    samples = pl.read_parquet(data / "samples.parquet")
    sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    table = SampleTable.from_frame(seed_samples(samples, sessions, "train"))
    for strategy in ("ddp", "fsdp"):
        policy = load_policy(root / "seed")[0]
        log = train_round(policy, pairs, table, dataclasses.replace(align_cfg, strategy=strategy), 1,
                          log=lambda _: None, info=info)
        _dump(root, f"round_{strategy}", info.rank, policy, log)

    result = run_alignment(root / "seed", root / "rm", data, root / "align_ddp", align_cfg, log=lambda _: None)
    (root / f"align_ddp_rank{info.rank}.json").write_text(json.dumps(result))

    def fail() -> None:
        raise OnerecError("rank 0 cannot sample")

    try:
        D.main_only(fail)
        seen = "no error"
    except Exception as err:  # noqa: BLE001 - the test checks what each rank saw
        seen = f"{type(err).__name__}: {err}"
    (root / f"main_only_rank{info.rank}.txt").write_text(seen)
    D.barrier()
    D.teardown()


if __name__ == "__main__":
    main()
