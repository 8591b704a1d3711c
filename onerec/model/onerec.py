"""The OneRec encoder-decoder (ONEREC.md section 4): history encoder, MoE decoder over semantic-ID tokens.

Design choices
- Vocabulary: token 0 is BOS; level ``j`` token ``t`` (0 <= t < level_sizes[j]) is ``1 + offset_j + t`` with
  ``offset_j = sum(level_sizes[:j])``. An item is ``D = L + 1`` tokens (the last one is the dedup token).
  One embedding table serves the encoder, the decoder input and (tied, by default) the output head.
- The model holds the item -> codes table as a persistent buffer ``item_codes`` (I, D), so every public
  method takes item ids, and a checkpoint carries the codes it was trained with.
- Encoder input: a learned ``[USER]`` token (so an empty history is still attendable) followed by the
  history items. Each item is the sum of its D token embeddings, plus a linear projection of the frozen
  item-embedding matrix when ``item_emb_dim > 0`` (buffer ``item_embeddings``), plus a learned per-item
  embedding when ``item_id_emb`` (encoder only: the decoder still reads and writes codes), plus a learned embedding of
  its *recency rank* (0 = most recent), plus optionally a learned log2 time-gap bucket embedding.
- Padding: histories are padded with -1. Ranks are computed from the valid mask, so left padding (the
  canonical form: ``samples.history`` keeps the last items, oldest first) and right padding give the same
  output; only the ``max_history`` most recent valid items are used.
- Decoder input ``[BOS, s_1^1..s_1^D, BOS, s_2^1..s_2^D, ...]`` with learned absolute positions. The hidden
  state at BOS and at ``s_i^1..s_i^{D-1}`` predicts ``s_i^1..s_i^D``; the one at ``s_i^D`` would predict the
  next BOS, which is known, so it is not a target. Logits are *level-local*: the state that predicts level
  ``j`` is scored only against level ``j``'s K_j tokens (a softmax per level), which is also what the
  trie-constrained beam search uses, so ``sequence_logp`` equals the beam scores.
- Copy head (``copy_head``, off by default: not in the paper): a pointer-generator over the history. The state
  that predicts level ``j`` also attends (its own query/key projections) over the history items whose codes
  share the prefix already written, and a learned gate ``g`` mixes ``g * softmax(level logits) + (1 - g) *
  pointer``, the pointer putting each attended item's weight on its level-``j`` token; with no matching
  history item the level is the plain softmax. It lets a model recommend an item again (repeat consumption)
  without learning to spell its codes from the encoder state. Training, ``sequence_logp`` and beam search
  share :meth:`OneRec.level_logp`, so beam scores still equal ``sequence_logp``; ``level_logits`` of the
  output then hold these log-probs (log-softmax leaves them unchanged). ``copy_gate_bias`` (an attribute, 0
  after training and loading; ``eval.copy_gate_bias`` / ``serve.copy_gate_bias`` set it through
  ``set_copy_gate_bias``) is added to the gate's log-odds at inference: > 0 copies less, < 0 more — a knob
  chosen on validation, not a trained parameter.
- Item head (``item_head``, off by default: not in the paper; the hybrid of generative and dense retrieval of
  LIGER, Yang et al. 2024): the state at each session item's BOS also scores every item densely,
  ``item_q(h) . r_i`` with ``r_i`` the item's encoder representation (the sum of its code embeddings plus the
  item-embedding projection: no per-item parameters, so it is no bigger for a larger catalogue), trained by a
  full-softmax cross-entropy added to the loss with weight ``item_head_coef``. Beam search then searches
  ``gen logp + item_head_weight * item logp`` (:mod:`onerec.model.generate`); ``sequence_logp`` stays the
  generative part. ``item_head_weight`` is an attribute set from the config (``eval.item_head_weight`` overrides
  it through ``set_item_head_weight``): a knob chosen on validation. With ``item_head_copy`` (needs the copy
  head) the item head is a pointer-generator as well: ``g * dense + (1 - g) * pointer`` with the copy head's gate
  and pointer at that BOS (the level-0 ones: every history item is a candidate), summed per item, so a dense
  softmax does not have to relearn repeat consumption and does not outvote the pointer in the hybrid score.
- Sessions are padded on the right with -1; padded items are neither targets nor (causally) context of
  real ones. NTP loss = mean over real code tokens; ``loss = ntp + aux_loss_coef * aux`` with ``aux`` the
  mean Switch load-balancing loss of the MoE layers (0 for the dense ablation).
- ``forward`` changes no state. Loss-free balancing is applied by the trainer calling
  :meth:`OneRec.update_balance_bias` with the router statistics a forward returned.
- Parameters are initialised from ``config.seed`` with an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onerec.config import ConfigError
from onerec.io import OnerecError
from onerec.model.layers import DecoderBlock, EncoderBlock, KVCache
from onerec.model.moe import DenseFFN, MixtureOfExperts, MoEImpl, RouterStats

BOS = 0


@dataclass
class ModelConfig:
    """``[model]`` table. The vocabulary (levels, codebook sizes) comes from the tokenizer, not from here."""

    d_model: int = 128
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    d_ff: int = 512  # dense FFN width (encoder; decoder when ffn = "dense")
    ffn: Literal["moe", "dense"] = "moe"  # decoder FFN
    n_experts: int = 8
    top_k: int = 2
    expert_d_ff: int = 256
    moe_impl: Literal["sorted", "loop"] = "sorted"  # MoEImpl; "loop" is the slow reference
    aux_loss_coef: float = 0.01  # weight of the Switch load-balancing loss (0 = off)
    loss_free_balance: bool = False  # bias-based balancing, applied by the trainer via update_balance_bias
    balance_bias_rate: float = 1e-3
    max_history: int = 50
    max_session_items: int = 10  # m at most (decoder positions = m * (D + 1))
    time_buckets: int = 0  # > 0: add a log2(seconds) time-gap bucket embedding (needs history_ts)
    item_emb_dim: int = 0  # > 0: project a frozen (I, item_emb_dim) item-embedding matrix into the encoder
    item_id_emb: bool = False  # add a learned per-item embedding (I, d_model) to the encoder's history items
    copy_head: bool = False  # pointer-generator over the history items (repeat consumption); see the module doc
    item_head: bool = False  # dense item scores at each item's BOS state, mixed into beam search; see the module doc
    item_head_coef: float = 1.0  # weight of the item head's cross-entropy in the training loss
    item_head_weight: float = 1.0  # inference: beam score = gen logp + item_head_weight * item logp
    item_head_copy: bool = False  # with the copy head: the item head is a pointer-generator too (module doc)
    dropout: float = 0.0
    history_dropout: float = 0.0  # training only: hide each history item from the encoder with this probability
    tie_embeddings: bool = True
    init_std: float = 0.02
    seed: int = 0  # parameter initialisation

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "n_experts", "top_k",
                     "expert_d_ff", "max_history", "max_session_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if self.top_k > self.n_experts:
            raise ConfigError(f"model.top_k={self.top_k} exceeds model.n_experts={self.n_experts}")
        for name in ("time_buckets", "item_emb_dim", "aux_loss_coef", "balance_bias_rate", "item_head_coef",
                     "item_head_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if not math.isfinite(self.item_head_weight):
            raise ConfigError(f"model.item_head_weight must be finite, got {self.item_head_weight}")
        if self.item_head_copy and not (self.item_head and self.copy_head):
            raise ConfigError("model.item_head_copy needs model.item_head = true and model.copy_head = true")
        for name in ("dropout", "history_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.init_std <= 0:
            raise ConfigError(f"model.init_std must be > 0, got {self.init_std}")


@dataclass
class CopyContext:
    """The copy head's view of encoded requests (:meth:`OneRec.copy_context`)."""

    keys: torch.Tensor  # (B, S, C) pointer keys of the memory positions
    items: torch.Tensor  # (B, S) item id at each memory position, -1 for [USER] and unused history slots
    codes: torch.Tensor  # (B, S, D) level-local codes of those items (item 0's for the -1 slots: masked by users)


@dataclass
class OneRecOutput:
    """What one training forward returns."""

    level_logits: list[torch.Tensor]  # D tensors (B, m, K_j): logits of level j of every session item
    # (log-probs when model.copy_head)
    loss: torch.Tensor  # () ntp + aux_loss_coef * aux
    ntp_loss: torch.Tensor  # () mean cross-entropy over real code tokens
    aux_loss: torch.Tensor  # () mean load-balancing loss over MoE layers (0 when dense)
    router: list[RouterStats]  # one per MoE decoder layer
    n_tokens: int  # code tokens in the NTP mean
    item_loss: torch.Tensor | None = None  # () mean item-head cross-entropy over real items (model.item_head)
    item_logp: torch.Tensor | None = None  # (B, m, I) item-head log-probs at each session item's BOS state


def time_gap_buckets(history_ts: torch.Tensor, valid: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """(B, n) ms timestamps -> (B, n) bucket ``floor(log2(1 + seconds before the newest history item))``."""
    newest = torch.where(valid, history_ts, torch.full_like(history_ts, torch.iinfo(torch.int64).min))
    newest = newest.max(dim=1, keepdim=True).values  # (B, 1)
    gap_s = ((newest - history_ts).clamp(min=0).double() / 1000.0)  # (B, n)
    bucket = torch.floor(torch.log2(1.0 + gap_s)).long().clamp(0, n_buckets - 1)
    return torch.where(valid, bucket, torch.zeros_like(bucket))


class OneRec(nn.Module):
    """Encoder over the user's history, MoE decoder writing a session's semantic-ID tokens."""

    def __init__(self, config: ModelConfig, semantic_ids: Any, item_embeddings: Any = None) -> None:
        """``semantic_ids``: anything with ``.codes`` (I, D) ints and ``.level_sizes`` (D,) (``SemanticIds``).
        ``item_embeddings``: (I, config.item_emb_dim) floats when ``item_emb_dim > 0``; ``None`` leaves zeros
        to be filled by ``load_state_dict`` from a checkpoint."""
        super().__init__()
        self.config = config
        codes = torch.as_tensor(np.asarray(semantic_ids.codes), dtype=torch.long)  # (I, D)
        self.level_sizes = [int(s) for s in semantic_ids.level_sizes]
        if codes.ndim != 2 or codes.shape[1] != len(self.level_sizes) or codes.shape[0] == 0:
            raise OnerecError(f"codes of shape {tuple(codes.shape)} do not match {len(self.level_sizes)} levels")
        self.depth = len(self.level_sizes)  # D
        self.n_items = codes.shape[0]
        self.vocab_size = 1 + sum(self.level_sizes)
        offsets = [1 + sum(self.level_sizes[:j]) for j in range(self.depth)]
        self.register_buffer("item_codes", codes)  # persistent: the checkpoint holds its codes
        self.register_buffer("level_offsets", torch.tensor(offsets), persistent=False)  # (D,)
        c = config.d_model

        self.token_emb = nn.Embedding(self.vocab_size, c)
        self.head = None if config.tie_embeddings else nn.Parameter(torch.empty(self.vocab_size, c))
        # encoder
        self.user_token = nn.Parameter(torch.empty(c))
        self.enc_pos = nn.Embedding(config.max_history, c)
        self.time_emb = nn.Embedding(config.time_buckets, c) if config.time_buckets else None
        self.item_proj = None
        if config.item_emb_dim:
            table = torch.zeros(self.n_items, config.item_emb_dim)
            if item_embeddings is not None:
                given = torch.as_tensor(np.asarray(item_embeddings), dtype=torch.float32)
                if tuple(given.shape) != tuple(table.shape):
                    raise OnerecError(f"item embeddings have shape {tuple(given.shape)}, the model needs "
                                      f"{tuple(table.shape)} (items, model.item_emb_dim)")
                table = given.clone()
            self.register_buffer("item_embeddings", table)  # frozen
            self.item_proj = nn.Linear(config.item_emb_dim, c, bias=False)
        elif item_embeddings is not None:
            raise OnerecError("item embeddings were given but model.item_emb_dim is 0")
        self.item_id_table = nn.Embedding(self.n_items, c) if config.item_id_emb else None
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(c, config.n_heads, config.d_ff, config.dropout) for _ in range(config.encoder_layers))
        self.enc_norm = nn.LayerNorm(c)
        # decoder
        self.max_decoder_len = config.max_session_items * (self.depth + 1)
        self.dec_pos = nn.Embedding(self.max_decoder_len, c)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(c, config.n_heads, self._make_ffn(), config.dropout) for _ in range(config.decoder_layers))
        self.dec_norm = nn.LayerNorm(c)
        self.copy_q = self.copy_k = self.copy_gate = None
        if config.copy_head:
            self.copy_q, self.copy_k = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
            self.copy_gate = nn.Linear(c, 1)
        self.copy_gate_bias = 0.0  # inference-time shift of the gate's log-odds (module doc)
        self.item_q = nn.Linear(c, c, bias=False) if config.item_head else None
        self.item_head_weight = float(config.item_head_weight) if config.item_head else 0.0
        self._init_weights()

    def set_copy_gate_bias(self, bias: float) -> None:
        """Set the inference-time gate bias (module doc); a non-zero bias needs the copy head."""
        if bias and self.copy_gate is None:
            raise OnerecError(f"copy_gate_bias={bias}, but the model has no copy head")
        self.copy_gate_bias = float(bias)

    def set_item_head_weight(self, weight: float) -> None:
        """Set the inference weight of the item head in beam search; a non-zero weight needs the item head."""
        if weight and self.item_q is None:
            raise OnerecError(f"item_head_weight={weight}, but the model has no item head (model.item_head)")
        if not weight >= 0:
            raise OnerecError(f"item_head_weight must be >= 0, got {weight}")
        self.item_head_weight = float(weight)

    def _make_ffn(self) -> nn.Module:
        cfg = self.config
        if cfg.ffn == "dense":
            return DenseFFN(cfg.d_model, cfg.d_ff)
        return MixtureOfExperts(cfg.d_model, cfg.expert_d_ff, cfg.n_experts, cfg.top_k, MoEImpl(cfg.moe_impl))

    def _init_weights(self) -> None:
        g = torch.Generator().manual_seed(self.config.seed)
        norms = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.reset_parameters()
            for p in self.parameters():  # registration order: deterministic
                if id(p) not in norms:
                    p.copy_(torch.randn(p.shape, generator=g) * self.config.init_std)

    # ------------------------------------------------------------------------------------- pieces
    def set_moe_impl(self, impl: MoEImpl | str) -> None:
        """Switch every MoE layer between the sorted dispatch and the loop-over-experts reference."""
        for block in self.dec_blocks:
            if isinstance(block.ffn, MixtureOfExperts):
                block.ffn.impl = MoEImpl(impl)

    def _check_items(self, items: torch.Tensor, what: str) -> None:
        if items.numel() and int(items.max()) >= self.n_items:
            bad = int((items >= self.n_items).sum())
            raise OnerecError(f"{what} holds {bad} item ids >= {self.n_items} (the tokenizer's item count)")

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(..., ) item ids (all items when ``None``) -> (..., C): sum of code embeddings + item-embedding
        projection, the representation the encoder reads (without position) and the item head scores."""
        items = torch.arange(self.n_items, device=self.item_codes.device) if items is None else items
        x = self.token_emb(self.item_codes[items] + self.level_offsets).sum(dim=-2)
        if self.item_proj is not None:
            x = x + self.item_proj(self.item_embeddings[items])
        return x

    def item_logp(self, hidden: torch.Tensor, copy: CopyContext | None = None) -> torch.Tensor:
        """hidden (..., C) BOS states -> (..., I) item-head log-probs over every item (needs ``model.item_head``).
        With ``model.item_head_copy`` and the requests' ``copy`` context, hidden is (B, T, C) with B requests
        and the result the gated mixture with the pointer over each request's history items (module doc)."""
        if self.item_q is None:
            raise OnerecError("the model has no item head (model.item_head = false)")
        dense = torch.log_softmax((self.item_q(hidden) @ self.item_vectors().T).float(), dim=-1)
        if copy is None or not self.config.item_head_copy:
            return dense
        match = (copy.items >= 0)[:, None, :].expand(-1, hidden.shape[1], -1)  # (B, T, S): every history item
        return self._mix_pointer(hidden, dense, copy, match, copy.items.clamp(min=0))

    def encode(self, history: torch.Tensor, history_ts: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, n) item ids padded with -1 -> memory (B, 1 + n, C), memory mask (B, 1 + n) bool."""
        cfg = self.config
        self._check_items(history, "history")
        b = history.shape[0]
        valid = history >= 0  # (B, n)
        rank = valid.flip(1).long().cumsum(1).flip(1) - 1  # (B, n) valid items after this one = recency
        valid = valid & (rank < cfg.max_history)
        if self.training and cfg.history_dropout > 0:  # augmentation: positions stay, hidden items are masked out
            valid = valid & (torch.rand(valid.shape, device=valid.device) >= cfg.history_dropout)
        items = history.clamp(min=0)
        x = self.item_vectors(items)  # (B, n, C)
        if self.item_id_table is not None:
            x = x + self.item_id_table(items)
        x = x + self.enc_pos(rank.clamp(0, cfg.max_history - 1))
        if self.time_emb is not None:
            if history_ts is None:
                raise OnerecError("model.time_buckets > 0 but no history timestamps were given")
            x = x + self.time_emb(time_gap_buckets(history_ts, valid, cfg.time_buckets))
        x = torch.cat([self.user_token.expand(b, 1, -1), x], dim=1)  # (B, 1 + n, C)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), valid], dim=1)
        for block in self.enc_blocks:
            x = block(x, mask)
        return self.enc_norm(x), mask

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the cross-attention keys/values (B, H, S, dh) of the encoder memory."""
        return [block.cross_attn.project_kv(memory) for block in self.dec_blocks]

    def decoder_tokens(self, sessions: torch.Tensor) -> torch.Tensor:
        """sessions (B, m) item ids -> decoder input (B, m * (D + 1)): [BOS, s_1^1..s_1^D, BOS, ...]."""
        b, m = sessions.shape
        codes = self.item_codes[sessions.clamp(min=0)] + self.level_offsets  # (B, m, D)
        bos = torch.full((b, m, 1), BOS, dtype=torch.long, device=sessions.device)
        return torch.cat([bos, codes], dim=2).reshape(b, m * (self.depth + 1))

    def decode(self, tokens: torch.Tensor, cross: list[tuple[torch.Tensor, torch.Tensor]],
               memory_mask: torch.Tensor, start: int = 0, group: int = 1, cache: KVCache | None = None,
               router_stats: bool = True, last_only: bool = False) -> tuple[torch.Tensor, list[RouterStats]]:
        """tokens (B * group, T) at positions start.. -> final-norm hidden (B * group, T, C), router stats.

        With ``cache`` the tokens extend the cached prefix and the cache advances by T. ``router_stats=False``
        (generation) skips the MoE statistics and returns an empty list. ``last_only`` (with ``cache``; a
        beam step needs only the newest position's state): the last block runs cross-attention and FFN for
        the last position alone, after caching every position's keys/values -> hidden (B * group, 1, C)."""
        if last_only and cache is None:
            raise OnerecError("decode(last_only=True) needs a KV cache")
        t = tokens.shape[1]
        if start + t > self.max_decoder_len:
            raise OnerecError(f"decoder length {start + t} exceeds model.max_session_items * (D + 1) = "
                              f"{self.max_decoder_len}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.token_emb(tokens) + self.dec_pos(pos)  # (B * G, T, C)
        stats = []
        last = len(self.dec_blocks) - 1
        for layer, (block, (k, v)) in enumerate(zip(self.dec_blocks, cross)):
            x, s = block(x, k, v, memory_mask, group=group, cache=cache, layer=layer, stats=router_stats,
                         last_only=last_only and layer == last)
            if s is not None:
                stats.append(s)
        if cache is not None:
            cache.advance(t)
        return self.dec_norm(x), stats

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """hidden (..., C) -> (..., K_level) logits over that level's tokens only."""
        weight = self.token_emb.weight if self.head is None else self.head
        off = 1 + sum(self.level_sizes[:level])
        return hidden @ weight[off:off + self.level_sizes[level]].T

    def copy_context(self, history: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
                     ) -> CopyContext | None:
        """What the copy head reads from an encoded request (``None`` without the copy head): the pointer keys of
        the memory and the item at each memory position (-1 for [USER] and unused history slots)."""
        if self.copy_k is None:
            return None
        b = history.shape[0]
        items = torch.cat([history.new_full((b, 1), -1), history.long()], dim=1).masked_fill(~memory_mask, -1)
        return CopyContext(self.copy_k(memory), items, self.item_codes[items.clamp(min=0)])

    def level_logp(self, hidden: torch.Tensor, level: int, copy: CopyContext | None = None,
                   match: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, T, C) -> (B, T, K_level) log-probs of that level's tokens. With the copy head, ``match``
        (B, T, S) marks the memory positions whose item the pointer may choose (a real history item whose codes
        share the prefix written so far) and the level is the gated mixture of the module doc."""
        gen = torch.log_softmax(self.level_logits(hidden, level).float(), dim=-1)
        if copy is None or self.copy_q is None:
            return gen
        return self._mix_pointer(hidden, gen, copy, match, copy.codes[..., level])

    def _mix_pointer(self, hidden: torch.Tensor, gen: torch.Tensor, copy: CopyContext, match: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
        """The copy head's gated mixture: hidden (B, T, C), gen (B, T, K) log-probs, match (B, T, S) the memory
        positions the pointer may choose, target (B, S) the index in K each position's weight goes to ->
        (B, T, K) ``log(g * exp(gen) + (1 - g) * pointer)``, or gen where no position matches."""
        scores = (self.copy_q(hidden) @ copy.keys.transpose(1, 2)).float() * hidden.shape[-1] ** -0.5  # (B, T, S)
        found = match.any(dim=-1, keepdim=True)  # (B, T, 1)
        weights = torch.softmax(scores.masked_fill(~match, float("-inf")).masked_fill(~found, 0.0), dim=-1) * match
        pointer = gen.new_zeros(gen.shape).scatter_add_(-1, target[:, None, :].expand_as(weights), weights)
        gate = self.copy_gate(hidden).float() + self.copy_gate_bias  # (B, T, 1): log-odds of generating over copying
        mixed = torch.logaddexp(F.logsigmoid(gate) + gen, F.logsigmoid(-gate) + pointer.clamp_min(1e-30).log())
        return torch.where(found, mixed, gen)

    # ------------------------------------------------------------------------------------- training
    def forward(self, history: torch.Tensor, sessions: torch.Tensor,
                history_ts: torch.Tensor | None = None) -> OneRecOutput:
        """history (B, n), sessions (B, m) item ids (-1 = padding) -> logits and loss pieces."""
        self._check_items(sessions, "sessions")
        b, m = sessions.shape
        memory, memory_mask = self.encode(history, history_ts)
        hidden, stats = self.decode(self.decoder_tokens(sessions), self.cross_kv(memory), memory_mask)
        hidden = hidden.view(b, m, self.depth + 1, -1)  # (B, m, D + 1, C)
        item_mask = sessions >= 0  # (B, m)
        targets = self.item_codes[sessions.clamp(min=0)]  # (B, m, D) level-local
        copy = self.copy_context(history, memory, memory_mask)
        if copy is None:
            logits = [self.level_logits(hidden[:, :, j], j) for j in range(self.depth)]  # D x (B, m, K_j)
        else:  # pointer candidates of level j: history items whose first j codes are the target's
            same = copy.codes[:, None] == targets[:, :, None]  # (B, m, S, D)
            prefix = torch.cat([same.new_ones(same.shape[:-1] + (1,)), same.cumprod(dim=-1).bool()], dim=-1)
            real = (copy.items >= 0)[:, None, :]  # (B, 1, S)
            logits = [self.level_logp(hidden[:, :, j], j, copy, prefix[..., j] & real) for j in range(self.depth)]
        n_tokens = int(item_mask.sum()) * self.depth
        ntp = sum(
            (F.cross_entropy(lg.flatten(0, 1).float(), targets[:, :, j].flatten(), reduction="none")
             * item_mask.flatten()).sum()
            for j, lg in enumerate(logits)
        ) / max(n_tokens, 1)
        aux = torch.stack([s.aux_loss for s in stats]).mean() if stats else ntp.new_zeros(())
        loss = ntp + self.config.aux_loss_coef * aux if stats else ntp
        item_loss = item_logp = None
        if self.item_q is not None:
            item_logp = self.item_logp(hidden[:, :, 0], copy)  # (B, m, I) at each item's BOS
            picked = item_logp.gather(-1, sessions.clamp(min=0)[..., None])[..., 0]  # (B, m)
            item_loss = -(picked * item_mask).sum() / item_mask.sum().clamp(min=1)
            loss = loss + self.config.item_head_coef * item_loss
        return OneRecOutput(logits, loss, ntp, aux, stats, n_tokens, item_loss, item_logp)

    def token_logps(self, out: OneRecOutput, sessions: torch.Tensor) -> torch.Tensor:
        """Log-probs (B, m, D) of the sessions' own code tokens under ``out`` (0 for padded items)."""
        targets = self.item_codes[sessions.clamp(min=0)]  # (B, m, D)
        logps = torch.stack(
            [torch.log_softmax(lg.float(), -1).gather(-1, targets[:, :, j, None])[..., 0]
             for j, lg in enumerate(out.level_logits)], dim=-1)  # (B, m, D)
        return logps * (sessions >= 0)[..., None]

    def sequence_logp(self, history: torch.Tensor, sessions: torch.Tensor,
                      history_ts: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) sum of the log-probs of every code token of each session (for DPO); differentiable."""
        out = self(history, sessions, history_ts)
        return self.token_logps(out, sessions).sum(dim=(1, 2))

    @torch.no_grad()
    def update_balance_bias(self, router: list[RouterStats]) -> None:
        """Loss-free balancing: nudge each MoE layer's selection bias toward uniform load (trainer calls this
        after an optimizer step with the stats of that step's forward; no-op unless enabled)."""
        if not self.config.loss_free_balance:
            return
        moes = [blk.ffn for blk in self.dec_blocks if isinstance(blk.ffn, MixtureOfExperts)]
        for moe, stats in zip(moes, router):
            moe.update_bias(stats.tokens_per_expert, self.config.balance_bias_rate)

    # ------------------------------------------------------------------------------------- accounting
    def param_counts(self) -> dict[str, int]:
        """Total parameters, and those active per decoded token (only top_k of n_experts experts run)."""
        total = sum(p.numel() for p in self.parameters())
        idle = 0
        cfg = self.config
        for blk in self.dec_blocks:
            if isinstance(blk.ffn, MixtureOfExperts):
                idle += (cfg.n_experts - cfg.top_k) * 2 * cfg.d_model * cfg.expert_d_ff
        return {"total": total, "active": total - idle}

    def forward_flops(self, batch: int, history_len: int, n_items: int, attention: bool = True) -> float:
        """Matmul FLOPs (2 per multiply-add) of one forward on (batch, history_len) x (batch, n_items).

        Counts projections, the active experts and router, the level-local heads (and the copy head) and the
        item-embedding projection, plus (``attention``) attention scores/values with causal self-attention at
        half; ignores norms and softmaxes. Without attention it equals torch's FlopCounterMode count (a test
        checks)."""
        cfg, c = self.config, self.config.d_model
        s, t = history_len + 1, n_items * (self.depth + 1)
        enc = cfg.encoder_layers * s * (4 * c * c + 2 * c * cfg.d_ff) + history_len * cfg.item_emb_dim * c
        ffn = 2 * c * cfg.d_ff if cfg.ffn == "dense" else cfg.top_k * 2 * c * cfg.expert_d_ff + c * cfg.n_experts
        dec = cfg.decoder_layers * (t * (4 * c * c + 2 * c * c + ffn) + s * 2 * c * c)
        head = n_items * c * sum(self.level_sizes)
        once = 0  # per forward, not per sample
        if cfg.item_head:  # query projection and full item scores per session item; item vectors once per forward
            head += n_items * (c * c + self.n_items * c)
            once = self.n_items * cfg.item_emb_dim * c
        if cfg.copy_head:  # per predicted code: query, gate, scores over the memory; keys once per memory slot
            head += n_items * self.depth * (c * c + c + s * c) + s * c * c
        if cfg.item_head_copy:  # the item head's own pointer at each item's BOS: query, gate, scores
            head += n_items * (c * c + c + s * c)
        attn = cfg.encoder_layers * 2 * s * s * c + cfg.decoder_layers * (t * t * c + 2 * t * s * c)
        return 2.0 * batch * (enc + dec + head + (attn if attention else 0)) + 2.0 * once

