"""Distributed training on 2 CPU ranks (gloo), launched with torchrun in a subprocess.

One module fixture trains: a 1-process reference, a 1-process run interrupted at step 3, then one torchrun
launch (tests/dist_worker.py) with a DDP run, an FSDP2 run, the 2-rank resume of the 1-process checkpoint
and a 2-rank run interrupted at step 3, which this process resumes alone. Global batch 8, micro-batch 4:
1 process accumulates 2 micro-batches, 2 ranks take one each — the same micro-batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onerec.checkpoint import load_run
from onerec.train import train_command

sys.path.insert(0, str(Path(__file__).parent))
from train_fixture import make_fixture, write_config  # noqa: E402

OVERRIDES = ("train.max_steps=6", "train.eval_every=3", "train.save_every=3", "train.patience=0",
             "train.tensorboard=false")
TOL = {"rtol": 1e-5, "atol": 1e-6}
SELECT = ('train.select_metric="recall@5"', "train.select_beam=8", "train.eval_every=2")


class _Cut(Exception):
    pass


def _cut_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise _Cut

    return on_step


def _losses(run: Path) -> tuple[list[int], torch.Tensor]:
    rows = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    return [r["step"] for r in rows], torch.tensor([r["loss"] for r in rows], dtype=torch.float64)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    data, tok = make_fixture(root)
    config = write_config(root / "tiny_train.toml")
    train_command(data, tok, config, root / "single", overrides=OVERRIDES)
    train_command(data, tok, config, root / "single_select", overrides=OVERRIDES + SELECT)
    with pytest.raises(_Cut):
        train_command(data, tok, config, root / "single_cut", overrides=OVERRIDES, on_step=_cut_at(3))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).parent / "dist_worker.py"), str(root), *OVERRIDES],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    train_command(data, tok, config, root / "cut_2", overrides=OVERRIDES, resume=True)
    return root


def test_ddp_parameters_identical_across_ranks(root: Path) -> None:
    """After DDP training every rank holds exactly the same parameters."""
    from safetensors.torch import load_file

    r0, r1 = (load_file(str(root / f"ddp_params_{r}.safetensors")) for r in (0, 1))
    differing = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not differing, f"{len(differing)} tensors differ between ranks, e.g. {differing[:3]}"


def test_two_ranks_match_single_process_loss(root: Path) -> None:
    """2 ranks x 1 micro-batch give the loss curve of 1 process x 2 accumulated micro-batches."""
    steps, single = _losses(root / "single")
    steps2, ddp = _losses(root / "ddp")
    assert steps == steps2 == list(range(1, 7)), f"logged steps {steps} vs {steps2}"
    torch.testing.assert_close(ddp, single, **TOL, msg=lambda m: f"2-rank DDP loss curve differs: {m}")


def test_two_ranks_match_single_process_weights(root: Path) -> None:
    """The 2-rank run's saved weights equal the 1-process run's within float tolerance."""
    single, _ = load_run(root / "single")
    ddp, _ = load_run(root / "ddp")
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_fsdp_matches_ddp_loss(root: Path) -> None:
    """FSDP2 (sharded parameters, gradients, optimizer state) gives DDP's loss curve."""
    _, ddp = _losses(root / "ddp")
    _, fsdp = _losses(root / "fsdp")
    torch.testing.assert_close(fsdp, ddp, **TOL, msg=lambda m: f"FSDP2 loss curve differs from DDP: {m}")


def test_one_process_checkpoint_resumes_on_two_ranks(root: Path) -> None:
    """A run cut at step 3 by 1 process and resumed on 2 ranks reproduces the uninterrupted curve."""
    steps, single = _losses(root / "single")
    steps_r, resumed = _losses(root / "single_cut")
    assert steps_r == steps, f"resumed log has steps {steps_r}"
    torch.testing.assert_close(resumed, single, **TOL, msg=lambda m: f"1 -> 2 rank resume differs: {m}")


def test_two_rank_checkpoint_resumes_on_one_process(root: Path) -> None:
    """A run cut at step 3 on 2 ranks and resumed by 1 process reproduces the uninterrupted curve."""
    steps, single = _losses(root / "single")
    steps_r, resumed = _losses(root / "cut_2")
    assert steps_r == steps, f"resumed log has steps {steps_r}"
    torch.testing.assert_close(resumed, single, **TOL, msg=lambda m: f"2 -> 1 rank resume differs: {m}")


@pytest.mark.parametrize("name", ["ddp_select", "fsdp_select"])
def test_ranking_selection_on_two_ranks_matches_one_process(root: Path, name: str) -> None:
    """Selecting by validation recall on 2 ranks (DDP; FSDP2 through a gathered copy) logs the 1-process
    figures and keeps the same step."""
    def vals(run: Path) -> list[tuple[int, float]]:
        rows = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines()]
        return [(r["step"], r["val_recall@5"]) for r in rows if r["kind"] == "val"]

    assert vals(root / name) == vals(root / "single_select")
    info = json.loads((root / name / "run.json").read_text())
    ref = json.loads((root / "single_select" / "run.json").read_text())
    assert info["best_step"] == ref["best_step"] and info["best_val_recall@5"] == ref["best_val_recall@5"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_launch_matches_single_process(root: Path) -> None:
    """The README's multi-node command (c10d rendezvous, one agent per node) on two 'nodes' of this machine:
    `onerec train` trains as one process with the same global batch does."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             f"--node_rank={node}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
             "--rdzv-id=onerec-test", "-m", "onerec.cli", "train", "--data", str(root / "data"),
             "--tokenizer", str(root / "tok"), "--config", str(root / "tiny_train.toml"),
             "--out", str(root / "two_node"), *sets],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for node in (0, 1)
    ]
    outs = [a.communicate(timeout=300) for a in agents]
    for node, (a, (out, err)) in enumerate(zip(agents, outs)):
        assert a.returncode == 0, f"node {node} failed:\n{out[-2000:]}\n{err[-4000:]}"
    steps, single = _losses(root / "single")
    steps2, two_node = _losses(root / "two_node")
    assert steps2 == steps, f"logged steps {steps2}"
    torch.testing.assert_close(two_node, single, **TOL, msg=lambda m: f"2-node loss curve differs: {m}")
