"""Properties of the prefix trie used for constrained decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.io import OnerecError
from onerec.tokenizer.codec import SemanticIds
from onerec.tokenizer.trie import CodeTrie


def _semantic_ids(n: int = 400, k: int = 6, levels: int = 3, seed: int = 0) -> SemanticIds:
    rng = np.random.default_rng(seed)
    return SemanticIds.from_levels(rng.integers(0, k, size=(n, levels)), k)


@pytest.fixture(params=["dense", "csr"])
def trie_and_ids(request) -> tuple[CodeTrie, SemanticIds]:
    ids = _semantic_ids()
    cap = 2**30 if request.param == "dense" else 0
    trie = CodeTrie.from_codes(ids.codes, ids.level_sizes, dense_max_bytes=cap)
    assert trie.layout == request.param
    return trie, ids


def _all_paths(trie: CodeTrie) -> set[tuple[int, ...]]:
    """Every root-to-depth-D path, enumerated through allowed() and step() only."""
    frontier = [((), 0)]
    for _ in range(trie.depth):
        nodes = torch.tensor([n for _, n in frontier])
        mask = trie.allowed(nodes)
        nxt = []
        for (prefix, node), row in zip(frontier, mask):
            toks = torch.nonzero(row).flatten()
            children = trie.step(torch.full_like(toks, node), toks)
            assert (children >= 0).all(), "an allowed token stepped to an invalid node"
            nxt += [(prefix + (int(t),), int(c)) for t, c in zip(toks, children)]
        frontier = nxt
    items = trie.item_at(torch.tensor([n for _, n in frontier]))
    assert (items >= 0).all(), "a depth-D node holds no item"
    return {p for p, _ in frontier}


def test_trie_holds_exactly_the_assigned_codes(trie_and_ids) -> None:
    """The set of complete paths through allowed()/step() equals the set of item codes."""
    trie, ids = trie_and_ids
    paths = _all_paths(trie)
    expected = {tuple(int(v) for v in row) for row in ids.codes}
    assert paths == expected, f"{len(paths ^ expected)} codes differ between trie and assignment"


def test_walk_round_trips_every_item(trie_and_ids) -> None:
    """Walking item i's code from the root ends at the leaf of item i."""
    trie, ids = trie_and_ids
    items = trie.walk(torch.from_numpy(ids.codes))
    assert torch.equal(items, torch.arange(ids.n_items)), "trie walk did not return the item ids"


def test_invalid_nodes_and_tokens_are_absorbing(trie_and_ids) -> None:
    """Node -1 allows nothing and steps to -1; an unknown token steps to -1; internal nodes hold no item."""
    trie, _ = trie_and_ids
    bad = torch.tensor([-1, trie.n_nodes + 5])
    assert not trie.allowed(bad).any(), "an invalid node allowed a token"
    assert (trie.step(bad, torch.tensor([0, 0])) == -1).all(), "an invalid node stepped somewhere"
    root = torch.zeros(3, dtype=torch.long)
    assert (trie.step(root, torch.tensor([-1, trie.vocab, 10**6])) == -1).all(), "out-of-vocab token accepted"
    assert (trie.item_at(torch.tensor([0, 1, -1])) == -1).all(), "root / depth-1 / invalid node held an item"


def test_dense_and_csr_layouts_agree() -> None:
    """The dense table and the CSR search give identical allowed masks and steps on every node."""
    ids = _semantic_ids(n=300, k=9, levels=2, seed=3)
    dense = CodeTrie.from_codes(ids.codes, ids.level_sizes, dense_max_bytes=2**30)
    csr = CodeTrie.from_codes(ids.codes, ids.level_sizes, dense_max_bytes=0)
    nodes = torch.arange(-1, dense.n_nodes + 1).repeat_interleave(3)
    tokens = torch.randint(-1, dense.vocab + 1, nodes.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dense.allowed(nodes), csr.allowed(nodes)), "allowed() differs between layouts"
    assert torch.equal(dense.step(nodes, tokens), csr.step(nodes, tokens)), "step() differs between layouts"
    for trie in (dense, csr):
        children = trie.children(nodes)  # (B, V)
        assert torch.equal(children >= 0, trie.allowed(nodes)), f"{trie.layout}: children() and allowed() disagree"
        every = torch.arange(trie.vocab)
        for row in range(0, nodes.shape[0], 7):
            want = trie.step(nodes[row].repeat(trie.vocab), every)
            assert torch.equal(children[row], want), f"{trie.layout}: children() != step() on node {int(nodes[row])}"


def test_save_load_round_trip(tmp_path, trie_and_ids) -> None:
    """A saved and loaded trie holds the same codes and answers the same queries."""
    trie, ids = trie_and_ids
    trie.save(tmp_path)
    loaded = CodeTrie.load(tmp_path)
    assert np.array_equal(loaded.codes(), ids.codes), "loaded trie holds different codes"
    nodes = torch.arange(trie.n_nodes)
    assert torch.equal(loaded.allowed(nodes), trie.allowed(nodes)), "allowed() changed after load"


def test_duplicate_codes_are_rejected() -> None:
    """A trie cannot be built from codes that two items share (decoding would be ambiguous)."""
    with pytest.raises(OnerecError, match="share a full code"):
        CodeTrie.from_codes(np.array([[0, 1], [0, 1], [1, 0]]))
