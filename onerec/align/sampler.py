"""Preference pairs: generate N sessions per user with the current policy, judge them, keep best vs worst.

Design choices
- One function, :func:`sample_pairs`, makes pairs; the in-process alignment rounds and the long-running
  sampling server (:func:`run_sample_server`) both call it, so the two paths cannot drift apart.
- The sampling policy ``M_t`` is also the DPO reference of round ``t+1``, so the sampler stores the
  reference log-probs of both sessions (teacher-forced ``sequence_logp``, no grad). The trainer never needs
  a second model in memory ("precomputed reference log-probs" in TRL's terms).
- Pair filtering: a pair is kept only when the reward gap (best - worst) is at least ``min_reward_gap``
  (near-ties teach noise). Beams the search could not fill (-inf) are never chosen.
- Shards: ``pairs-<policy_version>-r<rank>-<seq>.parquet``, one per fixed chunk of the rank's users, written
  to a temp name and renamed. The name is a function of (policy version, rank, chunk), and a sampler skips
  names that exist, so no pair is written twice and a sampler killed mid-shard leaves no partial shard: on
  restart it writes that chunk again. Users are sharded by ``user % world_size == rank`` (torchrun sets them).
- Every pair row records ``policy_version`` and ``codes_sha256`` (the tokenizer): the trainer refuses pairs
  made by another policy or tokenizer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from onerec.io import OnerecError, atomic_path

PAIR_COLUMNS = ["user", "sample", "history", "chosen", "rejected", "chosen_reward", "rejected_reward",
                "ref_chosen_logp", "ref_rejected_logp", "policy_version", "codes_sha256"]


@torch.no_grad()
def sample_pairs(
    policy: Any,
    trie: Any,
    reward_model: Any,
    history: torch.Tensor,
    users: np.ndarray,
    samples: np.ndarray,
    n_beams: int,
    session_len: int,
    policy_version: str,
    codes_sha256: str,
    reward_key: str = "reward",
    min_reward_gap: float = 0.0,
    batch_size: int = 16,
) -> pl.DataFrame:
    """Pairs (best vs worst of ``n_beams`` generated sessions by ``reward_key``) for each history row.

    history (U, n) item ids padded with -1 on the left; users/samples (U,) ids carried into the table.
    """
    from onerec.model.generate import generate_sessions

    policy.eval()
    rows: list[dict[str, Any]] = []
    for start in range(0, history.shape[0], batch_size):
        hist = history[start:start + batch_size]  # (B, n)
        beams = generate_sessions(policy, trie, hist, n_items=session_len, beam_size=n_beams)  # (B, N, m)
        filled = torch.isfinite(beams.logp) & (beams.items >= 0).all(-1)  # (B, N)
        scores = reward_model.score(hist, beams.items.clamp(min=0))[reward_key].float()  # (B, N)
        best = scores.masked_fill(~filled, -torch.inf).argmax(1)  # (B,)
        worst = scores.masked_fill(~filled, torch.inf).argmin(1)  # (B,)
        idx = torch.arange(hist.shape[0])
        chosen, rejected = beams.items[idx, best], beams.items[idx, worst]  # (B, m)
        gap = scores[idx, best] - scores[idx, worst]
        keep = (filled.sum(1) >= 2) & (gap >= min_reward_gap) & (best != worst)
        if not keep.any():
            continue
        ref_c = policy.sequence_logp(hist, chosen)  # (B,)
        ref_r = policy.sequence_logp(hist, rejected)
        for row in torch.nonzero(keep).flatten().tolist():
            h = hist[row]
            rows.append({
                "user": int(users[start + row]), "sample": int(samples[start + row]),
                "history": h[h >= 0].tolist(), "chosen": chosen[row].tolist(), "rejected": rejected[row].tolist(),
                "chosen_reward": float(scores[row, best[row]]), "rejected_reward": float(scores[row, worst[row]]),
                "ref_chosen_logp": float(ref_c[row]), "ref_rejected_logp": float(ref_r[row]),
                "policy_version": policy_version, "codes_sha256": codes_sha256,
            })
    return pairs_frame(rows)


def pairs_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"user": pl.Int32, "sample": pl.Int64, "history": pl.List(pl.Int32), "chosen": pl.List(pl.Int32),
              "rejected": pl.List(pl.Int32), "chosen_reward": pl.Float64, "rejected_reward": pl.Float64,
              "ref_chosen_logp": pl.Float64, "ref_rejected_logp": pl.Float64, "policy_version": pl.Utf8,
              "codes_sha256": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


def shard_name(policy_version: str, rank: int, seq: int) -> str:
    return f"pairs-{policy_version}-r{rank:03d}-{seq:06d}.parquet"


def write_shard(frame: pl.DataFrame, path: Path) -> None:
    """Write a shard atomically (temp file + rename)."""
    with atomic_path(Path(path)) as tmp:
        frame.write_parquet(tmp)


def read_shards(shard_dir: Path, policy_version: str, codes_sha256: str,
                log: Any = print) -> tuple[pl.DataFrame, dict[str, int]]:
    """All pairs of ``policy_version`` in ``shard_dir``; shards of another tokenizer or empty ones are skipped
    (and counted), unreadable ones too — training continues on the valid shards."""
    counts = {"shards": 0, "pairs": 0, "skipped_other_tokenizer": 0, "skipped_empty": 0, "skipped_unreadable": 0}
    frames = []
    for path in sorted(Path(shard_dir).glob(f"pairs-{policy_version}-r*.parquet")):
        try:
            frame = pl.read_parquet(path)
        except Exception as err:  # a foreign or damaged file must not stop training
            log(f"warning: {path.name}: unreadable shard skipped ({type(err).__name__})")
            counts["skipped_unreadable"] += 1
            continue
        missing = [c for c in PAIR_COLUMNS if c not in frame.columns]
        if missing:
            log(f"warning: {path.name}: not a pairs shard (missing {missing[0]}); skipped")
            counts["skipped_unreadable"] += 1
        elif frame.height == 0:
            log(f"warning: {path.name}: empty shard skipped")
            counts["skipped_empty"] += 1
        elif (frame["codes_sha256"] != codes_sha256).any():
            log(f"warning: {path.name}: pairs from another tokenizer (codes sha differs); skipped")
            counts["skipped_other_tokenizer"] += 1
        else:
            frames.append(frame.select(PAIR_COLUMNS))
            counts["shards"] += 1
    pairs = pl.concat(frames) if frames else pairs_frame([])
    counts["pairs"] = pairs.height
    return pairs, counts


def latest_policy(policy_root: Path) -> Path | None:
    """The newest policy run under ``policy_root``: the ``LATEST`` file names it (written by ``onerec align``)."""
    pointer = Path(policy_root) / "LATEST"
    if not pointer.is_file():
        return None
    target = Path(policy_root) / pointer.read_text().strip()
    return target if (target / "model.safetensors").is_file() else None


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run_sample_server(
    policy_root: Path,
    rm_dir: Path,
    data_dir: Path,
    out: Path,
    n_beams: int,
    session_len: int,
    shard_users: int = 64,
    max_users: int = 0,
    poll_s: float = 5.0,
    once: bool = False,
    seed: int = 0,
    log: Any = print,
) -> dict[str, int]:
    """Keep generating pair shards for the latest policy; returns counts when ``once`` (one pass per policy)."""
    from onerec.align.dpo import load_policy, user_histories
    from onerec.reward.model import RewardModel

    rank, world = rank_world()
    rm = RewardModel.load(rm_dir)
    out.mkdir(parents=True, exist_ok=True)
    done_versions: set[str] = set()
    written = {"shards": 0, "pairs": 0, "skipped_existing": 0}
    while True:
        policy_dir = latest_policy(policy_root)
        if policy_dir is None:
            if once:
                raise OnerecError(f"{policy_root}: no LATEST policy to sample from")
            time.sleep(poll_s)
            continue
        policy, trie, version, codes_sha = load_policy(policy_dir)
        if version not in done_versions:
            users, samples, history = user_histories(data_dir, policy.config.max_history, max_users, seed)
            mine = np.flatnonzero(users % world == rank)
            for seq, start in enumerate(range(0, len(mine), shard_users)):
                path = out / shard_name(version, rank, seq)
                if path.exists():
                    written["skipped_existing"] += 1
                    continue
                idx = mine[start:start + shard_users]
                t0 = time.perf_counter()
                frame = sample_pairs(policy, trie, rm, history[idx], users[idx], samples[idx], n_beams, session_len,
                                     version, codes_sha)
                write_shard(frame, path)
                written["shards"] += 1
                written["pairs"] += frame.height
                rate = len(idx) * n_beams / max(time.perf_counter() - t0, 1e-9)
                log(f"rank {rank}: {path.name}: {frame.height} pairs, {rate:.1f} sessions/s generated and scored")
            done_versions.add(version)
        if once:
            return written
        time.sleep(poll_s)
