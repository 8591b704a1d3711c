"""SASRec trained with full-softmax cross-entropy (Kang & McAuley 2018; CE loss as in Klenitskiy & Vasilev 2023).

Design choices
- The model is the original SASRec shape: item embeddings + learned position embeddings, a stack of
  causal self-attention blocks (pre-LayerNorm here), and scores ``h_t · E_i`` with the output tied to the
  input item embeddings. Positions count back from the newest item (0 = newest), so a history means the
  same thing whatever the batch is padded to.
- Loss: cross-entropy over **all** items at **every** position of a training sequence in one forward
  pass (causal attention), instead of the paper's BCE with one sampled negative — that choice alone moves
  Recall@10 on Amazon far above the published SASRec figures. Only real (non-padding) positions enter the
  softmax: their hidden states are gathered into one (N, d) matrix before the (N, I) logits.
- Training sequences longer than ``max_len + 1`` are cut into consecutive windows, so every target of
  ``i_2..i_{n-2}`` is trained on exactly once per epoch (earlier windows see a shorter context).
- Model selection on the validation split only: evaluate NDCG@10 every ``eval_every`` epochs, keep the
  best weights, stop after ``patience`` evaluations without improvement, or (``time_budget_s``) after
  the first epoch that ends past the budget, which is then evaluated too.
- Seeds: one ``torch.Generator`` for initialisation, shuffling and dropout masks derive from it too
  (``torch.manual_seed`` is called with the config seed because dropout has no generator argument).
- Progress: one tqdm bar on stderr over every training batch of every epoch, the epoch, its running mean
  loss and the last validation NDCG@10 in the postfix; ``sasrec.progress = false`` silences it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from onerec.config import ConfigError


@dataclass
class SASRecConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 1  # the paper's point-wise FFN keeps the width d
    dropout: float = 0.3
    max_len: int = 20  # = the harness's max_history (EVAL.md §5: the same history length for every model)
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    eval_every: int = 2
    patience: int = 2
    seed: int = 0
    threads: int = 2
    time_budget_s: float = 0.0  # > 0: stop after the first epoch that ends past this many seconds
    progress: bool = True  # tqdm bar on stderr over the training batches (epoch, running loss, valid NDCG@10)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "ffn_mult", "max_len", "batch_size", "epochs", "eval_every", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sasrec.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"sasrec.d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.time_budget_s < 0:
            raise ConfigError(f"sasrec.time_budget_s must be >= 0, got {self.time_budget_s}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"sasrec.dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ConfigError(f"sasrec.lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ConfigError(f"sasrec.patience must be >= 0, got {self.patience}")


class Block(nn.Module):
    """Pre-LN transformer block: causal multi-head self-attention, then a GELU feed-forward layer."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.d_model, cfg.d_model),
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.p_attn = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, c)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.p_attn if self.training else 0.0
        )  # (B, H, T, c)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """Item sequence (B, T) with 0 = padding and item i stored as i + 1 -> hidden states (B, T, d)."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def init_weights(self, generator: torch.Generator) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02, generator=generator)
            elif p is not None:
                nn.init.zeros_(p)
        for mod in self.modules():
            if isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        B, T = seq.shape  # left-padded: the newest item is at position T-1
        valid = seq > 0  # (B, T)
        recency = torch.arange(T - 1, -1, -1, device=seq.device).clamp(max=self.cfg.max_len - 1)  # (T,)
        x = self.item_emb(seq) * math.sqrt(self.cfg.d_model) + self.pos_emb(recency)[None]  # (B, T, C)
        x = self.drop(x * valid[..., None])
        causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).tril()  # (T, T)
        eye = torch.eye(T, dtype=torch.bool, device=seq.device)
        # a padded query attends to itself only, so no row of the mask is empty (no NaN)
        attn_mask = (causal[None] & valid[:, None, :]) | eye[None]  # (B, T, T)
        for block in self.blocks:
            x = block(x, attn_mask[:, None])
        return self.ln_f(x)  # (B, T, C)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> scores over all items (..., I) (tied output embedding)."""
        return hidden @ self.item_emb.weight[1:].T


def training_windows(train_sequences: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Cut sequences into left-padded windows of ``max_len + 1`` (ids shifted by +1, 0 = pad). (W, max_len+1).

    Consecutive windows overlap by one item, so every position 2..n of a sequence is a target exactly once.
    Sequences of fewer than 2 items give nothing to learn and are skipped.
    """
    rows = []
    span = max_len + 1
    for seq in train_sequences:
        seq = np.asarray(seq, dtype=np.int64) + 1
        end = len(seq)
        while end >= 2:
            start = max(0, end - span)
            window = np.zeros(span, dtype=np.int64)
            window[span - (end - start) :] = seq[start:end]
            rows.append(window)
            end = start + 1  # the next window's last item is this window's first input
    return np.stack(rows) if rows else np.zeros((0, span), dtype=np.int64)


def left_align(history: np.ndarray, max_len: int) -> torch.Tensor:
    """Harness history (B, n) padded with -1 at the end -> model input (B, max_len), left-padded, ids + 1."""
    history = np.asarray(history, dtype=np.int64)
    out = np.zeros((len(history), max_len), dtype=np.int64)
    for row, hist in enumerate(history):
        items = hist[hist >= 0][-max_len:] + 1
        if len(items):
            out[row, max_len - len(items) :] = items
    return torch.from_numpy(out)


class SASRecRecommender:
    """Harness adapter: ``recommend(history (B, n), k) -> (B, k)`` top items by the last hidden state's scores."""

    def __init__(self, model: SASRec) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, history: np.ndarray, k: int) -> np.ndarray:
        from onerec.evaluate.protocols import topk_by_score

        seq = left_align(history, self.model.cfg.max_len)  # (B, T)
        hidden = self.model(seq)[:, -1]  # (B, C)
        return topk_by_score(self.model.scores(hidden), k)


def train_epoch(model: SASRec, windows: torch.Tensor, opt: torch.optim.Optimizer, batch_size: int,
                generator: torch.Generator, on_batch: Callable[[float], None] | None = None) -> float:
    """One pass over shuffled ``windows`` (W, T+1); full-softmax CE at every real position. Mean loss.

    ``on_batch`` (the progress bar) gets the running mean loss after each batch.
    """
    model.train()
    perm = torch.randperm(len(windows), generator=generator)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[perm[start : start + batch_size]]  # (B, T+1)
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
        keep = (inputs > 0) & (targets > 0)  # (B, T)
        hidden = model(inputs)[keep]  # (N, C)
        logits = model.scores(hidden)  # (N, I)
        loss = F.cross_entropy(logits, targets[keep] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(hidden)
        count += len(hidden)
        if on_batch is not None:
            on_batch(total / max(count, 1))
    return total / max(count, 1)


def fit(
    train_sequences: Sequence[np.ndarray],
    n_items: int,
    cfg: SASRecConfig,
    validate: Callable[[SASRecRecommender], float] | None = None,
    log: Callable[[dict], None] | None = None,
) -> tuple[SASRec, dict]:
    """Train SASRec-CE; with ``validate`` (recommender -> validation NDCG@10) keep the best epoch and stop early.

    Returns the model (best validation weights) and a summary: epochs run, best epoch, best validation
    score, wall time in seconds and the per-evaluation history.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # dropout masks (no generator argument in nn.Dropout)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SASRec(n_items, cfg)
    model.init_weights(gen)
    windows = torch.from_numpy(training_windows(train_sequences, cfg.max_len))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    best_score, best_epoch, best_state, bad = -math.inf, 0, None, 0
    history = []
    t0 = time.perf_counter()
    epoch = 0
    bar = tqdm(total=cfg.epochs * math.ceil(len(windows) / cfg.batch_size), desc="sasrec", unit="batch",
               dynamic_ncols=True, disable=not cfg.progress)
    shown: dict[str, str] = {}

    def tick(mean_loss: float) -> None:
        shown["loss"] = f"{mean_loss:.4f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    with bar:
        for epoch in range(1, cfg.epochs + 1):
            shown["epoch"] = str(epoch)
            loss = train_epoch(model, windows, opt, cfg.batch_size, gen, tick)
            row = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0}
            out_of_time = cfg.time_budget_s > 0 and row["seconds"] > cfg.time_budget_s
            if validate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
                score = validate(SASRecRecommender(model))
                row["valid_ndcg@10"] = score
                shown["valid_ndcg@10"] = f"{score:.4f}"
                bar.set_postfix(shown)
                if score > best_score:
                    best_score, best_epoch, bad = score, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
            history.append(row)
            if log is not None:
                with tqdm.external_write_mode():  # the bar steps aside while the line is printed
                    log(row)
            if (validate is not None and bad > cfg.patience) or out_of_time:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    summary = {
        "epochs_run": epoch,
        "best_epoch": best_epoch if validate is not None else epoch,
        "best_valid_ndcg@10": best_score if validate is not None else None,
        "train_seconds": time.perf_counter() - t0,
        "history": history,
    }
    return model, summary
