"""The decoder KV cache: preallocated buffers that follow beam reorders, and incremental decoding with it."""

from __future__ import annotations

import torch

from onerec.model.layers import KVCache

from .tiny import catalogue, random_history, tiny_model


def _kv(rows: int, t: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 2, t, 3, generator=g), torch.randn(rows, 2, t, 3, generator=g)  # (B, H, T, dh)


def test_cache_follows_reorders_like_gather_then_cat():
    """Appends interleaved with reorders (a fan-out from 2 to 6 rows, repeated parents, two reorders before
    one append, steps of 1 and 2 positions, growth past the capacity) return what the plain reference
    (index_select the old keys/values, then cat the new ones) returns, for every layer."""
    g = torch.Generator().manual_seed(0)
    for capacity in (0, 3, 16):
        cache = KVCache(2, capacity=capacity)
        ref = [None, None]
        rows = 2
        plan = [(1, None), (1, torch.tensor([0, 0, 0, 1, 1, 1])), (2, torch.tensor([5, 0, 0, 2, 3, 3])),
                (1, "twice"), (2, torch.tensor([1, 1, 1, 1, 1, 1])), (1, torch.arange(6).flip(0)), (1, None)]
        for step, (t, order) in enumerate(plan):
            if isinstance(order, str):  # two reorders before one append compose
                first, second = torch.tensor([2, 3, 4, 5, 0, 1]), torch.tensor([0, 0, 5, 1, 2, 3])
                cache.reorder(first)
                cache.reorder(second)
                order = first[second]
            elif order is not None:
                cache.reorder(order)
            rows = rows if order is None else order.shape[0]
            for layer in range(2):
                k, v = _kv(rows, t, g)
                got_k, got_v = cache.append(layer, k, v)
                if ref[layer] is None:
                    ref[layer] = (k, v)
                else:
                    old_k, old_v = ref[layer]
                    if order is not None:
                        old_k, old_v = old_k.index_select(0, order), old_v.index_select(0, order)
                    ref[layer] = (torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2))
                assert torch.equal(got_k, ref[layer][0]), f"capacity {capacity} step {step} layer {layer}: keys"
                assert torch.equal(got_v, ref[layer][1]), f"capacity {capacity} step {step} layer {layer}: values"
            cache.advance(t)
        assert cache.length == sum(t for t, _ in plan), f"cache length {cache.length}"


def test_incremental_decode_equals_one_full_pass():
    """Decoding a session one or two tokens at a time with the cache (with ``last_only``, as the beam search
    does, and without) gives the hidden states of one full decoder pass, for 1 and 2 decoder layers."""
    ids, _ = catalogue(seed=1)
    for layers in (1, 2):
        model = tiny_model(ids, decoder_layers=layers, seed=layers)
        history = random_history(3, 6, 40, seed=1)
        tokens = model.decoder_tokens(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]))  # (3, 3 * (D + 1))
        with torch.inference_mode():
            memory, mask = model.encode(history)
            cross = model.cross_kv(memory)
            full, _ = model.decode(tokens, cross, mask)
            for last_only in (False, True):
                cache = KVCache(layers, capacity=tokens.shape[1])
                pos = 0
                for t in [1, 2, 1, 1, 2, 1, 2, 1, 1][: tokens.shape[1]]:
                    if pos + t > tokens.shape[1]:
                        break
                    hidden, _ = model.decode(tokens[:, pos:pos + t], cross, mask, start=pos, cache=cache,
                                             router_stats=False, last_only=last_only)
                    pos += t
                    assert hidden.shape[1] == (1 if last_only else t), f"hidden shape {tuple(hidden.shape)}"
                    torch.testing.assert_close(hidden[:, -1], full[:, pos - 1],
                                               msg=f"{layers} layers, last_only={last_only}: position {pos - 1}")
