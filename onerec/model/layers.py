"""Transformer building blocks of the OneRec encoder-decoder: attention, feed-forward, blocks, KV cache.

Design choices
- Pre-norm blocks (LayerNorm before each sub-layer, residual around it), as in T5/GPT-2: stable without
  warm-up tricks at these depths.
- Attention is ``F.scaled_dot_product_attention`` with boolean masks (True = may attend).
- Cross-attention keys/values are projected once per request (:meth:`CrossAttention.project_kv`) and
  shared by every beam of that request: the queries of ``group`` consecutive rows (the beams of one
  request) are folded into the query-length axis, so one (B, H, S, dh) memory serves (B * group) rows
  without being copied.
- The decoder self-attention KV cache (:class:`KVCache`) is an explicit argument; appending to it is the
  only state a forward pass changes, and only when a cache is passed (generation). ``reorder`` follows the
  beams after each beam-search step, lazily: the parent gather is fused into the next append.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C // H)."""
    b, t, c = x.shape
    return x.view(b, t, n_heads, c // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, dh) -> (B, T, H * dh)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class KVCache:
    """Keys/values of the decoder self-attention for every layer, grown by one step's positions at a time.

    ``reorder`` only records the beam parents; the gather happens together with the next append (one
    ``index_select`` + ``cat`` per layer and step, both contiguous), so a beam step copies the cache once."""

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers  # (B, H, length, dh) each
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # positions cached (same for every layer once a forward pass finishes)
        self._order: torch.Tensor | None = None  # pending row permutation, applied on the next append

    def reorder(self, index: torch.Tensor) -> None:
        """Row ``r`` becomes old row ``index[r]`` (beam-search parents)."""
        self._order = index if self._order is None else self._order[index]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' k, v (B, H, T, dh) to ``layer``; return the layer's full k, v."""
        old_k, old_v = self.k[layer], self.v[layer]
        if old_k is not None and old_v is not None:
            if self._order is not None:
                old_k, old_v = old_k.index_select(0, self._order), old_v.index_select(0, self._order)
            k, v = torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def advance(self, t: int) -> None:
        """Every layer has appended ``t`` positions: the pending reorder is done."""
        self.length += t
        self._order = None


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal or with a key-padding mask; optional KV cache."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With ``cache``, x holds the T newest positions; attention covers the
        cached prefix plus x, causally."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))  # (B, H, T, dh)
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                               is_causal=causal and attn_mask is None)
        else:
            start, t = cache.length, x.shape[1]
            k_all, v_all = cache.append(layer, k, v)  # (B, H, start + t, dh)
            mask = None
            if t > 1:  # new position i sees every cached position and new positions <= i
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        return self.out(merge_heads(y))


class CrossAttention(nn.Module):
    """Multi-head attention from decoder positions to the encoder memory."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, C) -> keys, values (B, H, S, dh): computed once per request."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, memory_mask: torch.Tensor,
                group: int = 1) -> torch.Tensor:
        """x (B * group, T, C), k/v (B, H, S, dh), memory_mask (B, S) bool -> (B * group, T, C).

        Rows ``b * group .. b * group + group - 1`` of x attend to memory row ``b``."""
        bg, t, c = x.shape
        b = bg // group
        q = split_heads(self.q(x), self.n_heads)  # (B * G, H, T, dh)
        dh = q.shape[-1]
        q = q.view(b, group, self.n_heads, t, dh).transpose(1, 2).reshape(b, self.n_heads, group * t, dh)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask[:, None, None, :], dropout_p=p)
        y = y.view(b, self.n_heads, group, t, dh).transpose(1, 2).reshape(bg, self.n_heads, t, dh)
        return self.out(merge_heads(y))


class FeedForward(nn.Module):
    """Dense position-wise FFN: Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x))))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention over the history, then a dense FFN."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, C), key_mask (B, S) bool (True = real position) -> (B, S, C)."""
        x = x + self.drop(self.attn(self.norm1(x), attn_mask=key_mask[:, None, None, :]))
        return x + self.ffn(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the encoder, then an FFN (MoE or dense).

    ``ffn`` is any module mapping (B, T, C) -> ((B, T, C), stats or None)."""

    def __init__(self, d_model: int, n_heads: int, ffn: nn.Module, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, n_heads, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.ffn = ffn
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor, memory_mask: torch.Tensor,
                group: int = 1, cache: KVCache | None = None, layer: int = 0):
        """x (B * group, T, C) -> ((B * group, T, C), router stats or None)."""
        x = x + self.drop(self.self_attn(self.norm1(x), causal=True, cache=cache, layer=layer))
        x = x + self.drop(self.cross_attn(self.norm2(x), cross_k, cross_v, memory_mask, group))
        y, stats = self.ffn(self.norm3(x))
        return x + self.drop(y), stats
