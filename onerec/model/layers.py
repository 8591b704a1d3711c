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
  beams after each beam-search step, lazily: the parent gather is fused into the next append, which writes
  into preallocated position-major buffers (one copy per layer and step, no allocation).
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
    """Keys/values of the decoder self-attention for every layer, in preallocated buffers written in place.

    Layout: per layer one ``(capacity, 2, B, H, dh)`` buffer, positions outermost and k, v side by side, so
    the cached prefix ``buf[:length]`` is one contiguous block. ``reorder`` only records the beam parents;
    the next ``append`` of each layer gathers the prefix into that layer's second (spare) buffer with one
    ``index_select(out=)`` over k and v together, writes the new positions behind it, and the two buffers
    swap. So a beam step copies each layer's cache once and allocates nothing (the old design gathered into
    a fresh tensor and then ``cat``-ed the new positions: two copies and two allocations per tensor and
    step). Attention reads strided ``(B, H, L, dh)`` views of the buffer; SDPA takes them as they are.
    ``capacity`` is the longest prefix expected (the beam search knows it); a longer one reallocates (doubling).
    A reorder may change the row count (the beam search decodes the shared BOS once per request, then
    fans each request out to its beams)."""

    def __init__(self, n_layers: int, capacity: int = 0) -> None:
        self.buf: list[torch.Tensor | None] = [None] * n_layers  # (capacity, 2, B, H, dh) each
        self._spare: list[torch.Tensor | None] = [None] * n_layers  # the other buffer of each layer
        self.capacity = capacity
        self.length = 0  # positions cached (same for every layer once a forward pass finishes)
        self._order: torch.Tensor | None = None  # pending row permutation, applied on the next append

    def reorder(self, index: torch.Tensor) -> None:
        """Row ``r`` becomes old row ``index[r]`` (beam-search parents)."""
        self._order = index if self._order is None else self._order[index]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' k, v (B, H, T, dh) to ``layer``; return the layer's full k, v
        (B, H, length + T, dh), views of the buffer valid until the layer's next append."""
        start, t = self.length, k.shape[2]
        rows, heads, _, dh = k.shape  # rows: after the pending reorder
        buf = self.buf[layer]
        if buf is None or start == 0:
            buf = k.new_empty((max(self.capacity, t), 2, rows, heads, dh))
        elif self._order is not None or buf.shape[0] < start + t:  # gather (or grow) into the spare buffer
            size = buf.shape[0] if buf.shape[0] >= start + t else max(2 * buf.shape[0], start + t)
            spare = self._spare[layer]
            if spare is None or spare.shape[0] != size or spare.shape[2] != rows:
                spare = k.new_empty((size, 2, rows, heads, dh))
            if self._order is None:
                spare[:start].copy_(buf[:start])
            else:
                torch.index_select(buf[:start], 2, self._order, out=spare[:start])
            self._spare[layer], buf = buf, spare
        buf[start:start + t, 0].copy_(k.permute(2, 0, 1, 3))
        buf[start:start + t, 1].copy_(v.permute(2, 0, 1, 3))
        self.buf[layer] = buf
        kv = buf[:start + t].permute(1, 2, 3, 0, 4)  # (2, B, H, L, dh)
        return kv[0], kv[1]

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
        last_only: bool = False,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With ``cache``, x holds the T newest positions; attention covers the
        cached prefix plus x, causally. ``last_only`` (with ``cache``): keys/values of all T positions are
        cached, but only the last position attends: -> (B, 1, C)."""
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
            if last_only:  # the last position sees everything: no mask
                q = q[:, :, -1:]
            elif t > 1:  # new position i sees every cached position and new positions <= i
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
        """x (B * group, T, C), k/v (B, H, S, dh), memory_mask (B, S) -> (B * group, T, C).

        Rows ``b * group .. b * group + group - 1`` of x attend to memory row ``b``. The mask is bool (True =
        may attend) or the equivalent additive float mask (0 / -inf), which SDPA uses without converting it
        (generation converts once per request instead of once per layer and step)."""
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

    ``ffn`` is any module mapping (B, T, C) -> ((B, T, C), stats or None); ``ffn(x, stats=False)`` may skip the
    stats (generation)."""

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
                group: int = 1, cache: KVCache | None = None, layer: int = 0, stats: bool = True,
                last_only: bool = False):
        """x (B * group, T, C) -> ((B * group, T, C), router stats or None); ``last_only`` (with ``cache``):
        every position's keys/values are cached, the rest runs for the last position only -> (B * group, 1, C)."""
        h = self.self_attn(self.norm1(x), causal=True, cache=cache, layer=layer, last_only=last_only)
        x = (x[:, -1:] if last_only else x) + self.drop(h)
        x = x + self.drop(self.cross_attn(self.norm2(x), cross_k, cross_v, memory_mask, group))
        y, router = self.ffn(self.norm3(x), stats=stats)
        return x + self.drop(y), router
