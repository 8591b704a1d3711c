"""Iterative preference alignment (ONEREC.md §6): rounds of sample -> judge -> pair -> train with NTP + λ·DPO.

Design choices
- Round ``t`` starts from policy ``M_t`` (the seed run for t = 0). ``M_t`` samples ``n_beams`` sessions for a
  share ``user_share`` of the training users, the reward model picks best and worst, and ``M_{t+1}``
  (initialised from ``M_t``) trains on ``L = L_NTP + λ·L_DPO`` with ``M_t`` as the frozen reference through
  log-probs precomputed by the sampler (``onerec.align.sampler``): no second model in memory, and the
  reference cannot change by construction. ``reference = "seed"`` anchors every round to ``M_0`` instead: the
  pairs' reference log-probs are recomputed with the seed model (rank 0, once per round), so the DPO term's
  implicit KL stays measured from ``M_0`` and drift does not compound over rounds.
- Pairs come from the sampler in-process (default) or, with ``--shards DIR``, from shards the sampling
  server (``onerec sample-server``) wrote for exactly this policy version.
- Every round keeps its own directory ``OUT/round_<t>/``: a run directory (``model.safetensors``,
  ``run.json``: ``load_run`` and ``onerec serve`` read it), ``pairs.parquet``, ``metrics.json``. ``OUT/LATEST``
  names the newest round so a sampling server picks it up.
- Evaluation per policy (OneRec Table 1 in our setting): reward-model towers, mean and max over the
  ``eval_beams`` generated sessions per held-out user; on simulator data the judge's true expected outcome
  of the top session; next-session Recall@10 on the held-out split (EVAL.md §2, §3).
- Under ``torchrun`` (``onerec.dist``; gloo on CPU, NCCL with ``align.device`` cuda) rank 0 alone samples
  (or reads shards), evaluates and writes; the pairs are broadcast (``main_only``), the other ranks wait.
  Sampling is a small share of users next to training, and one sampler keeps the pairs exactly those of a
  single process; for large sampling jobs the sampling server shards users over ranks (``--shards``). The
  reward model and the reference (its log-probs are precomputed) are never wrapped; only the policy trains,
  wrapped with DDP or FSDP2 (``align.strategy``) inside a module whose one forward is a micro-batch's whole
  loss (NTP + λ·DPO), so the wrappers see one forward per backward.
- Data order per step is a function of (seed, round, step) only: every rank draws the same global NTP batch
  (``batch_size``) and pair batch, cuts both into ``batch_size / micro_batch_size`` micro-batches and takes
  its share (``rank_micro_batches``); a split step seeds each micro-batch's dropout from its global index.
  So 1 process accumulating k micro-batches equals k ranks up to float summation order; one process with
  ``micro_batch_size = 0`` trains exactly as before (one forward per step, one dropout stream per round).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from onerec import checkpoint as ckpt
from onerec import dist as D
from onerec.align.losses import logratio_margin, preference_loss
from onerec.align.sampler import read_shards, sample_pairs
from onerec.config import ConfigError, to_dict
from onerec.io import OnerecError, atomic_write_text, write_json


@dataclasses.dataclass
class AlignConfig:
    """``[align]``: DPO rounds."""

    rounds: int = 2
    user_share: float = 0.01  # r_DPO: share of training users that get pairs each round (paper: 1 %)
    max_users: int = 0  # cap on users per round (0 = none)
    n_beams: int = 32  # N sessions per user (paper: 128 on GPU)
    session_len: int = 5  # m
    loss: Literal["dpo", "cdpo", "ipo"] = "dpo"
    beta: float = 0.1
    dpo_weight: float = 1.0  # λ
    label_smoothing: float = 0.0  # cdpo only
    min_reward_gap: float = 0.0  # pair filter: best - worst reward must reach this
    chosen_nll_weight: float = 0.0  # α: + λ·α·(per-token NLL of the chosen session), RPO (Pang et al. 2024)
    reference: Literal["previous", "seed"] = "previous"  # DPO reference of round t: M_{t-1} (paper) or M_0 (anchor)
    reward_key: str = "reward"
    steps: int = 100  # optimizer steps per round
    batch_size: int = 64  # NTP samples per step
    pair_batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_users: int = 256
    eval_beams: int = 16
    eval_recall_beams: int = 0  # beams of the in-loop Recall@10 search (0 = eval_beams); 16 beams of 5 items may hold < 10 items
    eval_split: Literal["valid", "test"] = "test"  # tune on valid, report test
    threads: int = 1  # torch threads (1 is fastest for these small models on a shared 2-core machine)
    seed: int = 0
    ntp_sessions: Literal["seed", "high_quality", "all"] = "seed"  # NTP-term samples; seed = M_0's train rule
    micro_batch_size: int = 0  # NTP samples per forward on one rank (pairs in proportion); 0 = batch_size / world
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (DDP) or shard (FSDP2) the policy
    progress: bool = True  # tqdm bar over each round's optimizer steps on stderr (rank 0)
    device: Literal["cpu", "auto", "cuda"] = "cpu"  # training device; cuda/auto: GPU when there is one (NCCL)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.n_beams < 2 or self.session_len < 1 or self.steps < 1:
            raise ConfigError("align.rounds, steps, session_len must be >= 1 and align.n_beams >= 2")
        if not 0 < self.user_share <= 1:
            raise ConfigError(f"align.user_share must lie in (0, 1], got {self.user_share}")
        if self.chosen_nll_weight < 0:
            raise ConfigError(f"align.chosen_nll_weight must be >= 0, got {self.chosen_nll_weight}")
        if self.beta <= 0 or self.dpo_weight < 0 or self.lr <= 0:
            raise ConfigError("align.beta and align.lr must be > 0, align.dpo_weight >= 0")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError("align.label_smoothing must lie in [0, 0.5)")
        if self.reference not in ("previous", "seed"):
            raise ConfigError(f"align.reference must be 'previous' or 'seed', got {self.reference!r}")
        if self.ntp_sessions not in ("seed", "high_quality", "all"):
            raise ConfigError(f"align.ntp_sessions must be 'seed', 'high_quality' or 'all', got {self.ntp_sessions!r}")
        if self.eval_recall_beams < 0:
            raise ConfigError(f"align.eval_recall_beams must be >= 0, got {self.eval_recall_beams}")
        if self.eval_split not in ("valid", "test") or self.threads < 1:
            raise ConfigError(f"align.eval_split must be valid or test (got {self.eval_split!r}), align.threads >= 1")
        micro = self.micro_batch_size
        if micro < 0 or micro and (self.batch_size % micro or self.pair_batch_size % (self.batch_size // micro)):
            raise ConfigError(f"align.micro_batch_size={self.micro_batch_size} must be >= 0, divide align.batch_size="
                              f"{self.batch_size}, and the micro-batch count must divide align.pair_batch_size")


def load_policy(run_dir: Path) -> tuple[Any, Any, str, str]:
    """(model, trie, version, codes sha) of a run directory."""
    from onerec.tokenizer.trie import CodeTrie

    model, info = ckpt.load_run(run_dir)
    codes = model.item_codes.cpu().numpy()
    version = str(info.get("version") or info.get("weights_sha256", "")[:12] or "v0")
    return model, CodeTrie.from_codes(codes, list(model.level_sizes)), version, ckpt.codes_sha256(codes)


def ntp_rule(seed_run: Path, cfg: AlignConfig) -> str:
    """The session rule of the NTP term: ``align.ntp_sessions``, or with "seed" the rule M_0 was trained
    on (its run.json ``train_config.seed_sessions``), so the regulariser sees the seed model's own data —
    on KuaiRand-Pure the paper's high-quality rule leaves ~100 samples, and 200 steps of NTP on those
    overfit them and wreck recall."""
    if cfg.ntp_sessions != "seed":
        return cfg.ntp_sessions
    train_config = ckpt.read_run_info(Path(seed_run)).get("train_config") or {}
    return str(train_config.get("seed_sessions", "high_quality"))


def left_pad(rows: list[np.ndarray], width: int) -> torch.Tensor:
    """Histories (oldest first) -> (B, width) long, newest item last, -1 padding on the left."""
    out = torch.full((len(rows), max(1, width)), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        row = np.asarray(row[-width:], dtype=np.int64)
        if row.size:
            out[r, out.shape[1] - row.size:] = torch.from_numpy(row)
    return out


@torch.no_grad()
def reference_logps(model: Any, pairs: pl.DataFrame, batch_size: int = 64) -> pl.DataFrame:
    """``pairs`` with ``ref_chosen_logp`` / ``ref_rejected_logp`` recomputed by ``model`` (eval mode)."""
    if pairs.height == 0:
        return pairs
    model.eval()
    width = model.config.max_history
    hist = [np.asarray(h, np.int64) for h in pairs["history"].to_list()]
    out: dict[str, list[np.ndarray]] = {"chosen": [], "rejected": []}
    for start in range(0, len(hist), batch_size):
        h = left_pad(hist[start:start + batch_size], width)
        for key in out:
            sessions = torch.tensor(pairs[key][start:start + batch_size].to_list(), dtype=torch.long)
            out[key].append(model.sequence_logp(h, sessions).double().numpy())
    return pairs.with_columns(pl.Series("ref_chosen_logp", np.concatenate(out["chosen"])),
                              pl.Series("ref_rejected_logp", np.concatenate(out["rejected"])))


def user_histories(data_dir: Path, max_history: int, max_users: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Each training user's latest training sample with a non-empty history: (users, samples, history (U, n))."""
    frame = (pl.read_parquet(Path(data_dir) / "samples.parquet", columns=["sample", "user", "split", "history"])
             .filter((pl.col("split") == "train") & (pl.col("history").list.len() > 0))
             .sort("sample").group_by("user", maintain_order=True).last().sort("user"))
    if max_users and frame.height > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(frame.height, max_users, replace=False))
        frame = frame[pick]
    hist = [np.asarray(h, dtype=np.int64) for h in frame["history"].to_list()]
    return (frame["user"].to_numpy().astype(np.int64), frame["sample"].to_numpy().astype(np.int64),
            left_pad(hist, max_history))


class _StepLoss(nn.Module):
    """One micro-batch's loss ``L_NTP + λ·L_pref`` in one forward, so DDP / FSDP2 see one forward per backward."""

    def __init__(self, policy: nn.Module, cfg: AlignConfig) -> None:
        super().__init__()
        self.policy = policy
        self.cfg = cfg

    def forward(self, history: torch.Tensor, sessions: torch.Tensor, pair_history: torch.Tensor | None = None,
                chosen: torch.Tensor | None = None, rejected: torch.Tensor | None = None,
                ref_chosen: torch.Tensor | None = None, ref_rejected: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, detached [ntp, pref_loss, margin, pair_accuracy]; the last three only with pairs)."""
        cfg = self.cfg
        out = self.policy(history, sessions)
        loss = out.loss
        stats = [out.ntp_loss.detach()]
        if pair_history is not None:
            pol_c = self.policy.sequence_logp(pair_history, chosen)  # (P,)
            pol_r = self.policy.sequence_logp(pair_history, rejected)
            pref = preference_loss(cfg.loss, pol_c, pol_r, ref_chosen, ref_rejected, cfg.beta, cfg.label_smoothing)
            if cfg.chosen_nll_weight > 0:  # RPO: keep the chosen session likely, so DPO cannot buy its margin by
                # pushing both sessions down and moving the mass off the data
                tokens = chosen.shape[1] * len(self.policy.level_sizes)
                pref = pref - cfg.chosen_nll_weight * pol_c / tokens
            loss = loss + cfg.dpo_weight * pref.mean()
            margin = logratio_margin(pol_c, pol_r, ref_chosen, ref_rejected).detach()
            stats += [pref.mean().detach(), margin.mean(), (margin > 0).float().mean()]
        return loss, torch.stack(stats)


def micro_split(cfg: AlignConfig, world_size: int) -> tuple[int, int, int]:
    """(NTP samples per forward, micro-batches per rank, pairs per micro-batch) of a step at ``world_size``."""
    micro = cfg.micro_batch_size or cfg.batch_size // world_size
    try:
        accum = D.accumulation_steps(cfg.batch_size, micro, world_size)
    except ValueError as err:
        raise OnerecError(f"align: {err}") from None
    n_micro = accum * world_size
    if cfg.dpo_weight > 0 and cfg.pair_batch_size % n_micro:
        raise OnerecError(f"align.pair_batch_size={cfg.pair_batch_size} does not split into the {n_micro} "
                          f"micro-batches of a step (batch_size {cfg.batch_size} / micro-batch {micro})")
    return micro, accum, cfg.pair_batch_size // n_micro


def train_round(policy: Any, pairs: pl.DataFrame, ntp_table: Any, cfg: AlignConfig, round_index: int,
                log: Any = print, info: D.DistInfo | None = None) -> list[dict[str, float]]:
    """Train ``policy`` in place on NTP samples + preference pairs for ``cfg.steps`` steps; returns the log.

    ``info`` (``onerec.dist.init_distributed``) under torchrun: every rank calls this with the same pairs and
    ends with the same weights; ``log`` is called on rank 0 only. The policy ends on the CPU.
    """
    from onerec.batching import collate
    from onerec.train import micro_seed

    info = info or D.DistInfo()
    micro, accum, per_micro = micro_split(cfg, info.world_size)
    n_micro = accum * info.world_size
    gen = np.random.default_rng([cfg.seed, round_index])
    round_seed = int(gen.integers(2**31))
    torch.manual_seed(round_seed)
    hist = [np.asarray(h, np.int64) for h in pairs["history"].to_list()]
    chosen = torch.tensor(pairs["chosen"].to_list(), dtype=torch.long)  # (P, m)
    rejected = torch.tensor(pairs["rejected"].to_list(), dtype=torch.long)
    ref_c = torch.tensor(pairs["ref_chosen_logp"].to_numpy())
    ref_r = torch.tensor(pairs["ref_rejected_logp"].to_numpy())
    m = chosen.shape[1]
    window = policy.config.max_history
    use_pairs = cfg.dpo_weight > 0 and len(hist) > 0
    # under torchrun a copy is wrapped (no wrapper hooks stay on ``policy``) and copied back at the end; the
    # policy's buffers (codes, balance biases) do not change during a round, so DDP need not re-send them
    step_loss = _StepLoss(copy.deepcopy(policy) if info.distributed else policy, cfg)
    wrapped = D.wrap_model(step_loss, info, cfg.strategy, broadcast_buffers=False)
    decay = [p for n, p in wrapped.named_parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for n, p in wrapped.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr)
    history_log = []
    wrapped.train()
    bar = tqdm(total=cfg.steps, desc=f"align round {round_index}", unit="step", dynamic_ncols=True,
               disable=not (cfg.progress and info.is_main))
    for step in range(cfg.steps):
        ntp_idx = gen.integers(0, len(ntp_table), cfg.batch_size)
        pair_idx = gen.integers(0, len(hist), cfg.pair_batch_size) if use_pairs else None
        mine = D.rank_micro_batches(ntp_idx, micro, info.rank, info.world_size)
        opt.zero_grad(set_to_none=True)
        sums = torch.zeros(4, dtype=torch.float64)
        for i, (j, idx) in enumerate(mine):
            if n_micro > 1:  # a split step: dropout seeded per global micro-batch (world-size free)
                torch.manual_seed(micro_seed(round_seed, step, j))
            batch = collate(ntp_table, idx, window, m)
            args = [batch["history"], batch["sessions"]]
            if pair_idx is not None:
                part = pair_idx[j * per_micro:(j + 1) * per_micro]
                pair_hist = left_pad([hist[k] for k in part], window)
                args += [pair_hist, chosen[part], rejected[part], ref_c[part], ref_r[part]]
            with D.grad_sync(wrapped, i == len(mine) - 1):
                loss, stats = wrapped(*(a.to(info.device) for a in args))
                (loss / accum if accum > 1 else loss).backward()
            sums[:len(stats)] += stats.double().cpu()
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
        opt.step()
        means = D.all_reduce_sum(sums.to(info.device)).cpu() / n_micro
        row: dict[str, float] = {"step": step, "ntp": float(means[0])}
        if pair_idx is not None:
            row.update({"pref_loss": float(means[1]), "margin": float(means[2]), "pair_accuracy": float(means[3])})
        history_log.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"}, refresh=False)
        bar.update(1)
        if info.is_main and (step % max(1, cfg.steps // 5) == 0 or step == cfg.steps - 1):
            log("  round {} step {:>4}: ".format(round_index, step)
                + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "step"))
    bar.close()
    if info.distributed:  # the wrapped copy's weights into ``policy``, on every rank
        D.copy_back(wrapped, policy, cfg.strategy, prefix="policy.")
    policy.cpu().eval()
    return history_log


@torch.no_grad()
def evaluate_policy(policy: Any, trie: Any, rm: Any, data_dir: Path, cfg: AlignConfig,
                    world: Any = None) -> dict[str, Any]:
    """RM towers (mean / max over beams), judge (simulator), next-session Recall@10 on the held-out split."""
    from onerec.evaluate.datasets import next_session_from_data
    from onerec.evaluate.generative import GenerativeRecommender
    from onerec.evaluate.protocols import evaluate_next_session
    from onerec.model.generate import generate_sessions

    window = policy.config.max_history
    frame = (pl.read_parquet(Path(data_dir) / "samples.parquet", columns=["sample", "user", "split", "history"])
             .filter((pl.col("split") == cfg.eval_split) & (pl.col("history").list.len() > 0)).sort("sample")
             .group_by("user", maintain_order=True).first().head(cfg.eval_users))
    if frame.height == 0:
        raise OnerecError(f"{data_dir}: no held-out ({cfg.eval_split}) samples with a history to evaluate on")
    history = left_pad([np.asarray(h, np.int64) for h in frame["history"].to_list()], window)
    towers: dict[str, list[torch.Tensor]] = {}
    tops = []
    for start in range(0, history.shape[0], 32):
        hist = history[start:start + 32]
        beams = generate_sessions(policy, trie, hist, n_items=cfg.session_len, beam_size=cfg.eval_beams)
        scores = rm.score(hist, beams.items.clamp(min=0))  # {tower: (B, N)}
        for key, value in scores.items():
            towers.setdefault(key, []).append(value.float())
        tops.append(beams.items[:, 0])
    out: dict[str, Any] = {"users": int(frame.height), "beams": cfg.eval_beams, "session_len": cfg.session_len,
                           "split": cfg.eval_split}
    for key, parts in towers.items():
        value = torch.cat(parts)  # (U, N)
        out[f"rm_{key}_mean"] = float(value.mean(1).mean())
        out[f"rm_{key}_max"] = float(value.max(1).values.mean())
    top = torch.cat(tops).numpy()  # (U, m)
    if world is not None:
        items = pl.read_parquet(Path(data_dir) / "items.parquet", columns=["item", "item_orig"]).sort("item")
        users = pl.read_parquet(Path(data_dir) / "users.parquet", columns=["user", "user_orig"]).sort("user")
        item_orig = items["item_orig"].cast(pl.Int64).to_numpy()
        user_orig = users["user_orig"].cast(pl.Int64).to_numpy()
        judged = world.expected_reward(user_orig[frame["user"].to_numpy()], item_orig[top], world.config.days - 1)
        out.update({f"judge_{k}": float(np.mean(v)) for k, v in judged.items()})
    test = next_session_from_data(Path(data_dir), cfg.eval_split, window)
    n = min(cfg.eval_users, len(test.history))
    from onerec.evaluate.protocols import NextSessionSet

    test = NextSessionSet(test.history[:n], test.positives[:n])
    out["recall_beams"] = cfg.eval_recall_beams or cfg.eval_beams
    rec = GenerativeRecommender(policy, beam_size=out["recall_beams"], m=cfg.session_len, trie=trie)
    quality = evaluate_next_session(rec, test, m=cfg.session_len, ks=(10,), batch_size=32)
    out.update({k: float(v) for k, v in quality.items()})
    return out


def save_policy(policy: Any, parent_info: dict[str, Any], round_dir: Path, round_index: int,
                cfg: AlignConfig) -> str:
    """Write ``round_dir`` as a run directory; returns the new policy version."""
    weights = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
    sha = ckpt.save_weights(weights, round_dir / ckpt.WEIGHTS)
    version = f"r{round_index}-{sha[:10]}"
    # a decoding knob chosen on validation for the parent's weights (`onerec tune --apply`) is not the policy's
    parent = {k: v for k, v in parent_info.items() if k != "decoding"}
    info = {**parent, "weights_sha256": sha, "version": version, "align_round": round_index,
            "parent_version": parent_info.get("version"), "align_config": to_dict(cfg)}
    ckpt.write_run_info(round_dir, info)
    return version


ALIGN_TIMEOUT_S = 4 * 3600.0  # under torchrun the other ranks wait this long at most while rank 0 samples / evaluates


def run_alignment(seed_run: Path, rm_dir: Path, data_dir: Path, out: Path, cfg: AlignConfig,
                  world_dir: Path | None = None, shards: Path | None = None, log: Any = print,
                  seed_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """All rounds, alone or under torchrun; returns the per-round table (rank 0 writes ``OUT/metrics.json``).

    ``seed_metrics``: M_0's row from an earlier run with the same evaluation settings (its ``version`` must be
    this seed run's), used instead of evaluating M_0 again (benchmarks that repeat M_0 over seeds)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    owns_group = not torch.distributed.is_initialized()  # a caller that set up the group tears it down
    info = D.init_distributed(cfg.device, timeout_s=ALIGN_TIMEOUT_S)
    try:
        return _rounds(Path(seed_run), Path(rm_dir), Path(data_dir), Path(out), cfg, world_dir, shards,
                       log if info.is_main else _quiet, info, seed_metrics)
    finally:
        if owns_group:
            D.teardown()


def _quiet(_: str) -> None:
    pass


def _check_item_sets(n_policy: int, n_rm: int, max_item: int, seed_run: Path, rm_dir: Path, data_dir: Path) -> None:
    """Policy, reward model and data must share one item set; refused before anything is written."""
    if n_rm != n_policy:
        raise OnerecError(f"reward model {rm_dir} scores {n_rm} items but the policy {seed_run} has {n_policy}: "
                          "they come from different item sets")
    if max_item >= n_policy:
        raise OnerecError(f"{data_dir}: samples reference item {max_item}, but the policy {seed_run} has {n_policy} "
                          "items: data and policy come from different item sets")


def _rounds(seed_run: Path, rm_dir: Path, data_dir: Path, out: Path, cfg: AlignConfig, world_dir: Path | None,
            shards: Path | None, log: Any, info: D.DistInfo, seed_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rounds of :func:`run_alignment`; sampling, evaluation and writing on rank 0 (``D.main_only``)."""
    from onerec.batching import SampleTable, seed_samples
    from onerec.io import atomic_path
    from onerec.reward.model import RewardModel

    micro_split(cfg, info.world_size)  # refuse a batch that does not split before any sampling
    rm = RewardModel.load(rm_dir)  # on every rank (small), so a bad input fails everywhere; rank 0 uses it
    world = None
    if world_dir is not None:
        from onerec.simulate import World

        world = World.load(world_dir)
    samples = pl.read_parquet(Path(data_dir) / "samples.parquet")
    sessions_path = Path(data_dir) / "sessions.parquet"
    sessions = pl.read_parquet(sessions_path, columns=["session", "high_quality"]) if sessions_path.is_file() else None
    ntp_table = SampleTable.from_frame(seed_samples(samples, sessions, "train", ntp_rule(seed_run, cfg)))
    if len(ntp_table) == 0:
        raise OnerecError(f"{data_dir}: no training samples for the NTP term")
    policy_dir = Path(seed_run)
    policy, trie, version, codes_sha = load_policy(policy_dir)
    _check_item_sets(policy.n_items, rm.n_items, ntp_table.max_item(), seed_run, rm_dir, data_dir)
    D.main_only(lambda: out.mkdir(parents=True, exist_ok=True))
    table = []
    anchor: list[Any] = []  # the seed model M_0 for ``reference = "seed"``, loaded on rank 0 when first needed

    def evaluate_seed() -> dict[str, Any]:
        if seed_metrics is not None:
            if seed_metrics.get("version") != version:
                raise OnerecError(f"seed_metrics are of policy {seed_metrics.get('version')!r}, not of {version!r}")
            return dict(seed_metrics)
        t0 = time.perf_counter()
        metrics0 = evaluate_policy(policy, trie, rm, data_dir, cfg, world)
        return {"round": 0, "version": version, **metrics0, "eval_s": round(time.perf_counter() - t0, 1)}

    table.append(D.main_only(evaluate_seed))  # rank 0's row (timings included) on every rank
    log(f"align: M_0 {_summary(table[0])}")
    for t in range(1, cfg.rounds + 1):

        def sample() -> tuple[pl.DataFrame, int, float, dict[str, Any]]:
            _, parent = ckpt.load_run(policy_dir)
            users, sample_ids, history = user_histories(data_dir, policy.config.max_history, 0, cfg.seed)
            n_pick = max(1, int(round(cfg.user_share * len(users))))
            if cfg.max_users:
                n_pick = min(n_pick, cfg.max_users)
            pick = np.sort(np.random.default_rng([cfg.seed, t]).choice(len(users), n_pick, replace=False))
            start = time.perf_counter()
            if shards is not None:
                pairs, counts = read_shards(shards, version, codes_sha, log)
                log(f"align: round {t}: {counts}")
            else:
                pairs = sample_pairs(policy, trie, rm, history[pick], users[pick], sample_ids[pick], cfg.n_beams,
                                     cfg.session_len, version, codes_sha, cfg.reward_key, cfg.min_reward_gap)
            if cfg.reference == "seed" and t > 1:  # round 1's sampler is M_0 already
                if not anchor:
                    anchor.append(load_policy(Path(seed_run))[0])
                pairs = reference_logps(anchor[0], pairs)
            return pairs, n_pick, time.perf_counter() - start, parent

        pairs, n_pick, sample_s, parent_info = D.main_only(sample)
        if pairs.height == 0:
            raise OnerecError(f"round {t}: no preference pairs (users={n_pick}, min_reward_gap={cfg.min_reward_gap})")
        log(f"align: round {t}: {pairs.height} pairs from {n_pick} users in {sample_s:.1f}s "
            f"({n_pick * cfg.n_beams / max(sample_s, 1e-9):.1f} sessions/s generated and scored)")
        start = time.perf_counter()
        train_log = train_round(policy, pairs, ntp_table, cfg, t, log, info)
        train_s = time.perf_counter() - start
        round_dir = out / f"round_{t}"

        def finish() -> dict[str, Any]:
            """Rank 0: write the round, reload its policy (the next sampler), evaluate it."""
            nonlocal policy, trie, version, codes_sha
            save_policy(policy, parent_info, round_dir, t, cfg)
            with atomic_path(round_dir / "pairs.parquet") as tmp:
                pairs.with_columns(pl.lit(t).alias("round")).write_parquet(tmp)
            policy, trie, version, codes_sha = load_policy(round_dir)
            metrics = evaluate_policy(policy, trie, rm, data_dir, cfg, world)
            row = {"round": t, "version": version, "pairs": pairs.height, "users": n_pick,
                   "sample_s": round(sample_s, 1), "train_s": round(train_s, 1),
                   "final_margin": train_log[-1].get("margin"), **metrics}
            write_json(round_dir / "metrics.json", {"round": row, "train_log": train_log})
            atomic_write_text(out / "LATEST", f"round_{t}\n")
            return row

        row = D.main_only(finish)  # other ranks keep their copy of the trained policy: the same weights
        table.append(row)
        policy_dir = round_dir
        log(f"align: M_{t} {_summary(row)}")
    result = {"config": to_dict(cfg), "rounds": table}
    D.main_only(lambda: write_json(out / "metrics.json", result))
    D.barrier()  # every rank past the last broadcast before any leaves the group
    return result


def _summary(m: dict[str, Any]) -> str:
    keys = ["rm_reward_mean", "rm_reward_max", "judge_reward", "recall@10"]
    return json.dumps({k: round(m[k], 4) for k in keys if k in m})
