"""Properties of trie-constrained beam search: valid, distinct items; cache = reference; exactness; seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from onerec.io import OnerecError
from onerec.model.generate import DecodeMode, generate_next_items, generate_sessions
from onerec.tokenizer.codec import SemanticIds
from onerec.tokenizer.trie import CodeTrie

from .tiny import catalogue, random_history, tiny_model


def _check_beams(beams, n_items_catalogue: int, exclude: torch.Tensor | None, where: str) -> None:
    """Every finite beam holds m distinct existing items, none excluded; unfilled beams are -1 / -inf."""
    b, n, m = beams.items.shape
    for r in range(b):
        banned = set() if exclude is None else set(exclude[r].tolist()) - {-1}
        seen = set()
        for k in range(n):
            row = beams.items[r, k].tolist()
            if not math.isfinite(float(beams.logp[r, k])):
                assert row == [-1] * m, f"{where}: unfilled beam {r},{k} holds items {row}"
                continue
            assert all(0 <= i < n_items_catalogue for i in row), f"{where}: invalid item in {row}"
            assert len(set(row)) == m, f"{where}: repeated item in session {row}"
            assert not banned & set(row), f"{where}: excluded item in {row} (excluded {sorted(banned)})"
            assert tuple(row) not in seen, f"{where}: session {row} appears twice among request {r}'s beams"
            seen.add(tuple(row))
        logp = beams.logp[r]
        assert bool((logp[:-1] >= logp[1:]).all()), f"{where}: beams not sorted best first: {logp.tolist()}"


def test_beams_are_valid_distinct_and_exhaustive_on_tiny_catalogues():
    """On tiny random catalogues (with and without exclusions) no beam holds an invalid, repeated or excluded
    item, and with beam >= the number of possible sessions every possible session comes out exactly once."""
    for seed in range(6):
        n_cat = 4 + seed % 3  # 4..6 items in skewed tries (codebook 2, heavy collisions)
        ids, trie = catalogue(n_items=n_cat, codebook=2, levels=2, seed=seed)
        model = tiny_model(ids, seed=seed)
        history = random_history(3, 4, n_cat, seed=seed)
        m = 3
        exclude = torch.tensor([[-1], [seed % n_cat], [(seed + 1) % n_cat]])
        beams = generate_sessions(model, trie, history, n_items=m, beam_size=128, exclude=exclude)
        _check_beams(beams, n_cat, exclude, f"catalogue seed {seed}")
        for r in range(3):
            free = n_cat - int((exclude[r] >= 0).sum())
            possible = math.perm(free, m)
            filled = int(torch.isfinite(beams.logp[r]).sum())
            assert filled == possible, f"seed {seed} request {r}: {filled} sessions, {possible} possible"


def test_prefix_whose_only_item_is_excluded_is_never_entered():
    """When the model prefers a prefix whose only item is excluded, beams take other prefixes, never strand."""
    codes = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 0, 0]])  # item 0 alone under token 0
    ids = SemanticIds(codes, [3, 2, 2])
    trie = CodeTrie.from_codes(codes, [3, 2, 2])
    model = tiny_model(ids)
    scores = model.level_logits

    def prefer_token_0(hidden: torch.Tensor, level: int) -> torch.Tensor:
        logits = scores(hidden, level)
        return logits + torch.tensor([50.0, 0.0, 0.0]) if level == 0 else logits

    model.level_logits = prefer_token_0  # level-0 token 0 (only item 0 under it) overwhelmingly likely
    history = torch.tensor([[1, 2], [3, 4]])
    free = generate_sessions(model, trie, history, n_items=1, beam_size=1)
    assert free.items[:, 0, 0].tolist() == [0, 0], f"setup: model should prefer item 0, got {free.items.tolist()}"
    exclude = torch.tensor([[0], [0]])
    beams = generate_sessions(model, trie, history, n_items=2, beam_size=4, exclude=exclude)
    _check_beams(beams, 5, exclude, "excluded prefix")
    assert bool(torch.isfinite(beams.logp).all()), f"a beam was stranded: {beams.logp.tolist()}"


@pytest.mark.parametrize("layers,copy_head", [(1, False), (2, False), (2, True)])
def test_cached_generation_equals_full_recompute(layers, copy_head):
    """The KV-cached search (BOS decoded once per request, cache gathered into preallocated buffers, last
    block on the newest position only) returns the same sessions and scores as the full-recompute reference."""
    ids, trie = catalogue(n_items=60, codebook=5, levels=2, seed=3)
    model = tiny_model(ids, seed=3, decoder_layers=layers, copy_head=copy_head)
    history = random_history(3, 8, 60, seed=3)
    exclude = torch.tensor([[1, 2, -1], [5, 5, 7], [-1, -1, -1]])
    cached = generate_sessions(model, trie, history, 4, 6, exclude=exclude, mode=DecodeMode.CACHED)
    full = generate_sessions(model, trie, history, 4, 6, exclude=exclude, mode=DecodeMode.FULL)
    assert torch.equal(cached.items, full.items), f"{cached.items.tolist()} != {full.items.tolist()}"
    torch.testing.assert_close(cached.logp, full.logp, msg="cached beam scores != full recompute")
    _check_beams(cached, 60, exclude, f"{layers} decoder layers")


@pytest.mark.parametrize("copy_head", [False, True])
def test_beam_scores_equal_sequence_logp(copy_head):
    """Each beam's score is the model's sequence_logp of the session it holds (which autograd can use, for DPO);
    with the copy head too (the search finds the pointer's candidates from trie nodes, training from codes)."""
    ids, trie = catalogue(n_items=30, seed=4)
    model = tiny_model(ids, seed=4, copy_head=copy_head)
    history = random_history(2, 5, 30, seed=4)
    beams = generate_sessions(model, trie, history, 3, 5)
    n = beams.items.shape[1]
    rescored = model.sequence_logp(history.repeat_interleave(n, 0), beams.items.reshape(-1, 3)).view(2, n)
    torch.testing.assert_close(beams.logp, rescored.detach(), msg="beam scores != sequence_logp")
    rescored.sum().backward()  # generated sessions are plain tensors, usable under autograd
    assert model.token_emb.weight.grad is not None, "no gradient through sequence_logp of generated sessions"


@pytest.mark.parametrize("copy_head", [False, True])
def test_next_items_with_full_beam_is_the_exact_top_k(copy_head):
    """With beam_size >= catalogue size, generate_next_items returns the exact top-k items by sequence_logp."""
    ids, trie = catalogue(n_items=12, codebook=3, levels=2, seed=5)
    model = tiny_model(ids, seed=5, copy_head=copy_head)
    history = random_history(3, 5, 12, seed=5)
    items, scores = generate_next_items(model, trie, history, k=5, beam_size=12)
    every = model.sequence_logp(history.repeat_interleave(12, 0), torch.arange(12).repeat(3)[:, None]).view(3, 12)
    best = every.detach().topk(5, dim=1)
    assert torch.equal(items, best.indices), f"top-5 {items.tolist()} != exhaustive {best.indices.tolist()}"
    torch.testing.assert_close(scores, best.values, msg="next-item scores != sequence_logp")


def test_same_seed_same_generation():
    """Two models from the same seed generate identical beams."""
    ids, trie = catalogue(seed=6)
    history = random_history(2, 5, 40, seed=6)
    a = generate_sessions(tiny_model(ids, seed=7), trie, history, 3, 4)
    b = generate_sessions(tiny_model(ids, seed=7), trie, history, 3, 4)
    assert torch.equal(a.items, b.items) and torch.equal(a.logp, b.logp), "same seed, different beams"


def test_generation_errors_are_clear():
    """Too many exclusions, too long sessions, a foreign trie and beam < k raise OnerecError."""
    ids, trie = catalogue(n_items=6, codebook=2, levels=2, seed=8)
    model = tiny_model(ids)
    history = torch.tensor([[1, 2]])
    with pytest.raises(OnerecError, match="fewer than n_items"):
        generate_sessions(model, trie, history, 3, 2, exclude=torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(OnerecError, match="max_session_items"):
        generate_sessions(model, trie, history, 7, 2)
    _, other = catalogue(n_items=6, codebook=2, levels=2, seed=9)
    if not np.array_equal(other.codes(), ids.codes):
        with pytest.raises(OnerecError, match="disagree"):
            generate_sessions(model, other, history, 1, 2)
    with pytest.raises(OnerecError, match="beam_size"):
        generate_next_items(model, trie, history, k=3, beam_size=2)


def test_all_sessions_enumerated_match_exhaustive_ranking():
    """With a beam covering every session of a 4-item catalogue, beams equal the exhaustive ranking."""
    ids, trie = catalogue(n_items=4, codebook=2, levels=2, seed=10)
    model = tiny_model(ids, seed=10)
    history = torch.tensor([[0, 3]])
    beams = generate_sessions(model, trie, history, 2, 12)
    sessions = torch.tensor(list(itertools.permutations(range(4), 2)))  # (12, 2)
    every = model.sequence_logp(history.expand(12, -1), sessions).detach()
    order = every.argsort(descending=True)
    torch.testing.assert_close(beams.logp[0], every[order], msg="beam scores != exhaustive ranking")
    assert {tuple(s) for s in beams.items[0].tolist()} == {tuple(s) for s in sessions.tolist()}, \
        "beams do not enumerate every session"


def test_trie_with_narrower_vocabulary_gives_the_same_beams():
    """A trie built from the codes alone (level sizes inferred, narrower than the model's) gives the same beams."""
    codes = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]])
    ids = SemanticIds(codes, [5, 4, 3])  # the model's vocabulary is wider than any code used
    model = tiny_model(ids)
    history = torch.tensor([[1, 2], [3, -1]])
    wide = generate_sessions(model, CodeTrie.from_codes(codes, [5, 4, 3]), history, 2, 6)
    narrow = generate_sessions(model, CodeTrie.from_codes(codes), history, 2, 6)
    assert torch.equal(wide.items, narrow.items), f"{wide.items.tolist()} != {narrow.items.tolist()}"


@pytest.mark.parametrize("copy_head", [False, True])
def test_spread_beams_hold_the_top_n_first_items(copy_head):
    """spread=True: valid, distinct, sorted beams whose first items are exactly the top-N first items of
    next-item search (one beam each), and each beam's score is the sequence_logp of the session it holds."""
    ids, trie = catalogue(n_items=30, seed=6)
    model = tiny_model(ids, seed=6, copy_head=copy_head)
    history = random_history(2, 5, 30, seed=6)
    n, m = 6, 3
    beams = generate_sessions(model, trie, history, n_items=m, beam_size=n, spread=True)
    _check_beams(beams, 30, None, "spread")
    first, _ = generate_next_items(model, trie, history, k=n, beam_size=30)
    for r in range(2):
        assert sorted(beams.items[r, :, 0].tolist()) == sorted(first[r].tolist()), "first items != top-N next items"
    rescored = model.sequence_logp(history.repeat_interleave(n, 0), beams.items.reshape(-1, m)).view(2, n)
    torch.testing.assert_close(beams.logp, rescored.detach(), msg="spread beam scores != sequence_logp")


def _hybrid_logp(model, history: torch.Tensor, sessions: torch.Tensor) -> torch.Tensor:
    """(B,) sequence_logp + item_head_weight * the item head's log-probs of the sessions' items."""
    out = model(history, sessions)
    picked = out.item_logp.gather(-1, sessions.clamp(min=0)[..., None])[..., 0] * (sessions >= 0)
    return (model.token_logps(out, sessions).sum(dim=(1, 2)) + model.item_head_weight * picked.sum(1)).detach()


@pytest.mark.parametrize("weight,copy", [(0.5, {}), (2.0, {}), (1.0, {"copy_head": True}),
                                         (1.0, {"copy_head": True, "item_head_copy": True})])
def test_item_head_beam_scores_are_the_hybrid_score(weight, copy):
    """With the item head, every beam's score is sequence_logp + w * the head's log-probs of its items (the trie
    masses telescope), the cached and full searches agree, and beams stay valid, distinct and outside exclude;
    also next to the copy head, and with the item head's own pointer (item_head_copy)."""
    ids, trie = catalogue(n_items=50, codebook=4, levels=2, seed=12)
    model = tiny_model(ids, seed=12, item_head=True, item_head_weight=weight, init_std=0.3, **copy)
    history = random_history(3, 6, 50, seed=12)
    history[2] = -1  # a request without history: the pointer has no candidate
    exclude = torch.tensor([[1, 2, -1], [5, 5, 7], [-1, -1, -1]])
    beams = generate_sessions(model, trie, history, 3, 6, exclude=exclude)
    full = generate_sessions(model, trie, history, 3, 6, exclude=exclude, mode=DecodeMode.FULL)
    assert torch.equal(beams.items, full.items), "cached and full searches differ with the item head"
    _check_beams(beams, 50, exclude, "item head")
    n = beams.items.shape[1]
    expected = _hybrid_logp(model, history.repeat_interleave(n, 0), beams.items.reshape(-1, 3)).view(3, n)
    torch.testing.assert_close(beams.logp, expected, msg="beam scores != sequence_logp + w * item-head logp")
    plain = generate_sessions(model, trie, history, 3, 6, exclude=exclude)
    model.set_item_head_weight(0.0)
    gen_only = generate_sessions(model, trie, history, 3, 6, exclude=exclude)
    rescored = model.sequence_logp(history.repeat_interleave(n, 0), gen_only.items.reshape(-1, 3)).view(3, n)
    torch.testing.assert_close(gen_only.logp, rescored.detach(), msg="weight 0 must be the generative search")
    assert not torch.equal(plain.logp, gen_only.logp), "the item head's weight changed nothing"


@pytest.mark.parametrize("copy", [{}, {"copy_head": True, "item_head_copy": True}])
def test_item_head_next_items_with_full_beam_is_the_exact_hybrid_top_k(copy):
    """With beam_size >= catalogue size, next items are the exact top-k by gen logp + w * item-head logp."""
    ids, trie = catalogue(n_items=12, codebook=3, levels=2, seed=13)
    model = tiny_model(ids, seed=13, item_head=True, item_head_weight=1.5, init_std=0.3, **copy)
    history = random_history(3, 5, 12, seed=13)
    items, scores = generate_next_items(model, trie, history, k=5, beam_size=12)
    every = _hybrid_logp(model, history.repeat_interleave(12, 0), torch.arange(12).repeat(3)[:, None]).view(3, 12)
    best = every.topk(5, dim=1)
    assert torch.equal(items, best.indices), f"top-5 {items.tolist()} != exhaustive {best.indices.tolist()}"
    torch.testing.assert_close(scores, best.values, msg="next-item scores != hybrid score")


def test_item_head_weight_needs_the_head():
    """A non-zero item-head weight on a model without the head, or a negative one, is a clear error."""
    ids, _ = catalogue(n_items=12, codebook=3, levels=2, seed=14)
    with pytest.raises(OnerecError, match="no item head"):
        tiny_model(ids).set_item_head_weight(1.0)
    with pytest.raises(OnerecError, match=">= 0"):
        tiny_model(ids, item_head=True).set_item_head_weight(-1.0)
