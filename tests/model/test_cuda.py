"""The model, the search and the trainer on a CUDA device agree with the CPU (run where a GPU is present).

CI has no GPU, so these skip there; they ran on an H200 (see the README's GPU section for the date and figures).
Matmuls run in full fp32 (TF32 off) so that the CPU and the GPU compute the same numbers up to rounding.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from onerec.checkpoint import load_run
from onerec.model.generate import DecodeMode, TrieCounts, generate_sessions
from onerec.train import train_command

from .tiny import catalogue, random_history, tiny_model

sys.path.insert(0, str(Path(__file__).parents[1]))
from train_fixture import make_fixture, write_config  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")


@pytest.fixture(autouse=True)
def _full_fp32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("copy_head", [False, True])
def test_forward_loss_matches_cpu(copy_head):
    ids, _ = catalogue(n_items=50, codebook=5, levels=2, seed=1)
    model = tiny_model(ids, seed=1, copy_head=copy_head)
    history = random_history(4, 8, 50, seed=1)
    sessions = torch.randint(0, 50, (4, 3), generator=torch.Generator().manual_seed(1))
    cpu = model(history, sessions).loss
    gpu = model.to("cuda")(history.cuda(), sessions.cuda()).loss
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("copy_head", [False, True])
def test_search_on_cuda_matches_cpu_and_is_valid(copy_head):
    """Same sessions and scores as on the CPU; cached = full recompute on the GPU; every item valid and distinct;
    the trie may live on either device."""
    ids, trie = catalogue(n_items=60, codebook=5, levels=2, seed=3)
    model = tiny_model(ids, seed=3, copy_head=copy_head)
    history = random_history(3, 8, 60, seed=3)
    cpu = generate_sessions(model, trie, history, 4, 6)
    model = model.to("cuda")
    for t in (trie, trie.to("cuda")):
        cached = generate_sessions(model, t, history.cuda(), 4, 6, mode=DecodeMode.CACHED)
        full = generate_sessions(model, t, history.cuda(), 4, 6, mode=DecodeMode.FULL)
        assert cached.items.is_cuda and torch.equal(cached.items, full.items)
        torch.testing.assert_close(cached.logp, full.logp)
        assert torch.equal(cached.items.cpu(), cpu.items), "CUDA and CPU beam search chose different sessions"
        torch.testing.assert_close(cached.logp.cpu(), cpu.logp, rtol=1e-4, atol=1e-4)
        items = cached.items.cpu()
        assert ((items >= 0) & (items < 60)).all()
        assert all(len(set(row.tolist())) == row.numel() for row in items.reshape(-1, 4)), "repeated item"


def test_trie_counts_on_cuda():
    ids, trie = catalogue(n_items=40, seed=2)
    model = tiny_model(ids, seed=2).to("cuda")
    counts = TrieCounts(trie, model.item_codes)
    assert counts.path.is_cuda and int(counts.node_count[0]) == 40  # the root sits above every item


def test_train_on_cuda_in_bf16_and_load_on_cpu(tmp_path):
    """``train.device = "cuda"`` with bf16 autocast trains (finite, falling loss) and the checkpoint loads on
    the CPU with the same weights the GPU trained."""
    data, tok = make_fixture(tmp_path)
    config = write_config(tmp_path / "tiny.toml")
    run = tmp_path / "run"
    train_command(data, tok, config, run, overrides=(
        "train.device=\"cuda\"", "train.precision=\"bf16\"", "train.max_steps=12", "train.eval_every=6",
        "train.tensorboard=false"))
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-3:]) < sum(losses[:3]), f"loss did not fall on the GPU: {losses}"
    model, _ = load_run(run, device="cpu")
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
