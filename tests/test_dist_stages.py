"""`onerec reward train` and `onerec align` on 2 CPU ranks (gloo), launched with torchrun in a subprocess.

One module fixture builds a tiny data directory (``make_reward_data``), a tokenizer, a 4-step seed run and a
reward model, runs the 1-process references, then one torchrun launch (tests/dist_stages_worker.py) trains
the same things on 2 ranks. The configs set ``micro_batch_size`` to half the global batch, so 1 process
accumulates 2 micro-batches and 2 ranks take one each: the same micro-batches, the same dropout masks
(dropout is on everywhere), so logs and weights agree up to float summation order. The worker also checks
that a failure in rank-0-only work (``onerec.dist.main_only``) reaches the waiting rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from onerec.align.dpo import AlignConfig, load_policy, run_alignment, train_round
from onerec.batching import SampleTable, seed_samples
from onerec.config import to_dict
from onerec.reward import RewardConfig
from onerec.reward.model import RewardModel
from onerec.reward.train import train_reward

from tests.reward.conftest import make_reward_data
from tests.train_fixture import write_config

TOL = {"rtol": 1e-5, "atol": 1e-6}
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-5}
REWARD = RewardConfig(d_model=16, n_heads=2, n_layers=1, epochs=2, batch_size=32, micro_batch_size=16, lr=5e-3,
                      max_session_len=8, max_history=20, feature_buckets=32, dropout=0.1)
ALIGN = AlignConfig(rounds=1, user_share=0.5, n_beams=4, session_len=3, steps=3, batch_size=8, micro_batch_size=4,
                    pair_batch_size=4, lr=3e-3, eval_users=4, eval_beams=4)


def build_inputs(root: Path) -> Path:
    """``root/data`` (16 users, 24 items), ``root/tok``, a 4-step seed run ``root/seed`` (dropout 0.1) and a
    1-epoch reward model ``root/rm``; returns the data directory."""
    from onerec.tokenizer.codec import SemanticIds
    from onerec.train import train_command

    data = make_reward_data(root / "data", n_users=16, n_items=24)
    levels = np.random.default_rng(0).integers(0, 4, size=(24, 2))
    SemanticIds.from_levels(levels, 4).save(root / "tok", {"method": "fixture"})
    train_command(data, root / "tok", write_config(root / "tiny.toml"), root / "seed",
                  overrides=("train.max_steps=4", "train.tensorboard=false", "model.dropout=0.1",
                             "model.max_session_items=5"))
    train_reward(data, root / "rm", RewardConfig(d_model=16, n_heads=2, epochs=1, batch_size=64, max_session_len=8,
                                                 max_history=20, feature_buckets=32))
    return data


def _ntp_table(data: Path) -> SampleTable:
    samples = pl.read_parquet(data / "samples.parquet")
    sessions = pl.read_parquet(data / "sessions.parquet", columns=["session", "high_quality"])
    return SampleTable.from_frame(seed_samples(samples, sessions, "train"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist_stages")
    data = build_inputs(root)
    (root / "configs.json").write_text(json.dumps({"reward": to_dict(REWARD), "align": to_dict(ALIGN)}))
    train_reward(data, root / "reward_1", REWARD)
    run_alignment(root / "seed", root / "rm", data, root / "align_1", ALIGN, log=lambda _: None)
    pairs = pl.read_parquet(root / "align_1" / "round_1" / "pairs.parquet").drop("round")
    policy = load_policy(root / "seed")[0]
    log = train_round(policy, pairs, _ntp_table(data), ALIGN, 1, log=lambda _: None)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(root / "round_1.safetensors"))
    (root / "round_1.json").write_text(json.dumps(log))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(Path(__file__).parent / "dist_stages_worker.py"), str(root)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return root


def _same_across_ranks(root: Path, name: str) -> None:
    r0, r1 = (load_file(str(root / f"{name}_rank{r}.safetensors")) for r in (0, 1))
    differing = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not differing, f"{name}: {len(differing)} tensors differ between ranks, e.g. {differing[:3]}"


def _close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert actual.keys() == expected.keys(), f"{what}: other tensor names"
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, **WEIGHT_TOL, msg=lambda m: f"{what} {name}: {m}")


def _column(rows: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([r[key] for r in rows], dtype=torch.float64)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_reward_parameters_identical_across_ranks(root: Path, strategy: str) -> None:
    """After reward-model training every rank holds exactly the same weights (FSDP2: gathered back)."""
    _same_across_ranks(root, f"reward_{strategy}")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_reward_two_ranks_match_one_process(root: Path, strategy: str) -> None:
    """2 ranks x 1 micro-batch give the 1-process (2 accumulated micro-batches) losses and saved weights;
    the model directory written by rank 0 loads in a plain process."""
    expected = json.loads((root / "reward_1" / "reward.json").read_text())["meta"]["train_log"]
    got = json.loads((root / f"reward_{strategy}_rank0.json").read_text())
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected] == [0, 1]
    for key in ("train_loss", "valid_loss"):
        torch.testing.assert_close(_column(got, key), _column(expected, key), **TOL,
                                   msg=lambda m: f"{strategy} {key} differs from 1 process: {m}")
    single = RewardModel.load(root / "reward_1").state_dict()
    _close(RewardModel.load(root / f"reward_{strategy}").state_dict(), single, f"reward {strategy}")
    _close(load_file(str(root / f"reward_{strategy}_rank1.safetensors")), single, f"reward {strategy} rank 1")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dpo_round_parameters_identical_across_ranks(root: Path, strategy: str) -> None:
    """After a DPO round every rank holds exactly the same policy weights."""
    _same_across_ranks(root, f"round_{strategy}")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dpo_round_two_ranks_match_one_process(root: Path, strategy: str) -> None:
    """A 2-rank DPO round (NTP + DPO, dropout on) logs the 1-process losses and ends with its weights."""
    expected = json.loads((root / "round_1.json").read_text())
    got = json.loads((root / f"round_{strategy}_rank0.json").read_text())
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [0, 1, 2]
    for key in ("ntp", "pref_loss", "margin", "pair_accuracy"):
        torch.testing.assert_close(_column(got, key), _column(expected, key), **TOL,
                                   msg=lambda m: f"{strategy} {key} differs from 1 process: {m}")
    _close(load_file(str(root / f"round_{strategy}_rank0.safetensors")), load_file(str(root / "round_1.safetensors")),
           f"policy {strategy}")


def test_align_command_two_ranks_match_one_process(root: Path) -> None:
    """``run_alignment`` on 2 ranks: rank 0's pairs are the 1-process pairs, the round's saved policy and train log
    match, every rank returns the same table, and only rank 0 wrote (one round directory, one LATEST)."""
    one, two = root / "align_1", root / "align_ddp"
    assert pl.read_parquet(two / "round_1" / "pairs.parquet").equals(pl.read_parquet(one / "round_1" / "pairs.parquet"))
    _close(load_file(str(two / "round_1" / "model.safetensors")), load_file(str(one / "round_1" / "model.safetensors")),
           "round_1 policy")
    got = json.loads((two / "round_1" / "metrics.json").read_text())["train_log"]
    expected = json.loads((one / "round_1" / "metrics.json").read_text())["train_log"]
    for key in ("ntp", "pref_loss", "margin"):
        torch.testing.assert_close(_column(got, key), _column(expected, key), **TOL, msg=lambda m: f"{key}: {m}")
    tables = [json.loads((root / f"align_ddp_rank{r}.json").read_text()) for r in (0, 1)]
    assert tables[0] == tables[1], "ranks returned different round tables"
    untimed = lambda row: {k: v for k, v in row.items() if not k.endswith("_s")}  # noqa: E731
    single = json.loads((one / "metrics.json").read_text())["rounds"]
    assert [untimed(r) for r in tables[0]["rounds"][:1]] == [untimed(single[0])], "M_0 evaluation differs"
    assert sorted(p.name for p in two.iterdir()) == ["LATEST", "metrics.json", "round_1"]


def test_rank0_failure_reaches_every_rank(root: Path) -> None:
    """Work done on rank 0 alone (sampling, evaluation) that fails raises there and on the waiting ranks."""
    seen = [(root / f"main_only_rank{r}.txt").read_text() for r in (0, 1)]
    assert seen == ["OnerecError: rank 0 cannot sample",
                    "RuntimeError: rank 0 failed: OnerecError: rank 0 cannot sample"], seen
