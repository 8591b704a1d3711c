"""Prefix trie of the valid semantic-ID codes, for constrained (beam-search) decoding.

Design choices
- Nodes are numbered breadth-first in lexicographic order of their prefix: the root is node 0, then
  every depth-1 node, then every depth-2 node ... and the leaves (depth ``D``, one per item) last. So
  the children of a node are consecutive node ids, sorted by token, and every node but the root has
  exactly one incoming edge: edge ``e`` leads to node ``e + 1``. The whole trie is four flat tensors
  (``node_token``, ``node_parent``, ``child_ptr`` (CSR), ``node_item``), which is also the file format.
- Two lookup layouts behind one API. ``dense``: an int32 table (internal nodes, V) of child ids
  (-1 = no such child), so ``step`` is one gather and ``allowed`` one comparison; used while the table
  fits ``dense_max_bytes``. ``csr``: ``step`` is a ``searchsorted`` over the sorted edge keys
  ``parent * V + token`` and ``allowed`` scatters each node's child tokens; memory is O(nodes). ``V``
  is ``max(level_sizes)``. Both are batched, loop-free and give identical results (tests compare them).
- Invalid input is absorbing: node ``-1`` (or any out-of-range node) allows nothing, steps to -1 and
  holds no item; an out-of-vocabulary token steps to -1.
- ``save``/``load`` use safetensors (no pickle); loading never rebuilds from codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onerec.io import OnerecError, atomic_path

TRIE_FILE = "trie.safetensors"
DENSE_MAX_BYTES = 256 * 2**20


class CodeTrie:
    """The set of valid codes (one per item) as a prefix trie; see the module docstring."""

    def __init__(
        self,
        node_token: torch.Tensor,
        node_parent: torch.Tensor,
        child_ptr: torch.Tensor,
        node_item: torch.Tensor,
        level_sizes: list[int],
        dense_max_bytes: int = DENSE_MAX_BYTES,
    ) -> None:
        self.node_token = node_token.long()  # (n_nodes,) token on the edge into the node, -1 for the root
        self.node_parent = node_parent.long()  # (n_nodes,) parent node, -1 for the root
        self.child_ptr = child_ptr.long()  # (n_nodes + 1,) children of n are ids child_ptr[n]+1 .. child_ptr[n+1]
        self.node_item = node_item.long()  # (n_nodes,) item id at a leaf, -1 elsewhere
        self.level_sizes = [int(s) for s in level_sizes]
        self.depth = len(self.level_sizes)
        self.root = 0
        self.vocab = max(self.level_sizes)
        self.n_nodes = int(self.node_token.shape[0])
        self.n_internal = int((self.child_ptr[1:] > self.child_ptr[:-1]).sum()) if self.n_nodes > 1 else 1
        # keys of edge e (into node e+1): parent * V + token, ascending by construction
        self.edge_keys = self.node_parent[1:] * self.vocab + self.node_token[1:]  # (n_nodes - 1,)
        self.dense_table: torch.Tensor | None = None
        if self.n_internal * self.vocab * 4 <= dense_max_bytes:
            self.dense_table = self._dense_table()
        self.layout = "dense" if self.dense_table is not None else "csr"

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray | torch.Tensor,
        level_sizes: list[int] | None = None,
        dense_max_bytes: int = DENSE_MAX_BYTES,
    ) -> CodeTrie:
        """Build the trie of ``codes`` (I, D): row ``i`` is item ``i``'s code. Codes must be distinct."""
        codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
            raise OnerecError(f"codes must be a non-empty (items, depth) array, got shape {codes.shape}")
        codes = codes.astype(np.int64)
        n_items, depth = codes.shape
        if level_sizes is None:
            level_sizes = [int(v) + 1 for v in codes.max(axis=0)]
        if len(level_sizes) != depth:
            raise OnerecError(f"level_sizes has {len(level_sizes)} entries for codes of depth {depth}")
        bad = (codes < 0) | (codes >= np.asarray(level_sizes)[None, :])
        if bad.any():
            raise OnerecError(f"{int(bad.any(axis=1).sum())} codes hold tokens outside 0..level_size-1")
        order = np.lexsort(codes.T[::-1])  # items sorted lexicographically by code
        sorted_codes = codes[order]  # (I, D)
        if n_items > 1:
            same = np.all(sorted_codes[1:] == sorted_codes[:-1], axis=1)
            if same.any():
                raise OnerecError(f"{int(same.sum())} items share a full code; codes must be one-to-one")
        tokens, parents = [np.array([-1])], [np.array([-1])]
        parent_of_item = np.zeros(n_items, dtype=np.int64)  # node of each sorted item at the previous depth
        next_id = 1
        changed = np.zeros(n_items, dtype=bool)
        for d in range(depth):
            # a new depth-(d+1) node starts wherever the prefix of length d+1 changes
            changed[0] = True
            changed[1:] |= sorted_codes[1:, d] != sorted_codes[:-1, d]
            starts = np.flatnonzero(changed)
            node_of_item = next_id + np.cumsum(changed) - 1
            tokens.append(sorted_codes[starts, d])
            parents.append(parent_of_item[starts])
            parent_of_item = node_of_item
            next_id += len(starts)
        node_token = np.concatenate(tokens)
        node_parent = np.concatenate(parents)
        n_nodes = next_id
        counts = np.bincount(node_parent[1:], minlength=n_nodes)  # children per node
        child_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(counts, out=child_ptr[1:])
        node_item = np.full(n_nodes, -1, dtype=np.int64)
        node_item[parent_of_item] = order
        return cls(
            torch.from_numpy(node_token),
            torch.from_numpy(node_parent),
            torch.from_numpy(child_ptr),
            torch.from_numpy(node_item),
            list(level_sizes),
            dense_max_bytes,
        )

    def _dense_table(self) -> torch.Tensor:
        table = torch.full((self.n_internal, self.vocab), -1, dtype=torch.int32)  # (n_internal, V)
        if self.n_nodes > 1:
            children = torch.arange(1, self.n_nodes)
            table[self.node_parent[1:], self.node_token[1:]] = children.int()
        return table

    # ----------------------------------------------------------------------------------- queries
    def _valid(self, nodes: torch.Tensor) -> torch.Tensor:
        return (nodes >= 0) & (nodes < self.n_nodes)

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B,) node ids -> (B, V) bool mask of the tokens that lead to a child (all False at a leaf/-1)."""
        nodes = nodes.long().to(self.node_token.device)
        valid = self._valid(nodes)
        safe = torch.where(valid, nodes, torch.zeros_like(nodes))
        if self.dense_table is not None:
            internal = valid & (safe < self.n_internal)
            rows = self.dense_table[torch.where(internal, safe, torch.zeros_like(safe))]  # (B, V)
            return (rows >= 0) & internal[:, None]
        start = self.child_ptr[safe]
        counts = torch.where(valid, self.child_ptr[safe + 1] - start, torch.zeros_like(start))  # (B,)
        mask = torch.zeros(nodes.shape[0], self.vocab, dtype=torch.bool, device=nodes.device)
        total = int(counts.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(nodes.shape[0], device=nodes.device), counts)
            offset = torch.arange(total, device=nodes.device) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts
            )
            child = start[row] + offset + 1  # node ids of the children
            mask[row, self.node_token[child]] = True
        return mask

    def children(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B,) node ids -> (B, V) long child of each token, -1 where the token leads nowhere (one table row
        per node with the dense layout; ``allowed(nodes) == (children(nodes) >= 0)``)."""
        nodes = nodes.long().to(self.node_token.device)
        if self.dense_table is not None:
            internal = self._valid(nodes) & (nodes < self.n_internal)
            rows = self.dense_table[torch.where(internal, nodes, torch.zeros_like(nodes))].long()  # (B, V)
            return rows.masked_fill(~internal[:, None], -1)
        tokens = torch.arange(self.vocab, device=nodes.device)
        return self.step(nodes.repeat_interleave(self.vocab), tokens.repeat(nodes.shape[0])).view(-1, self.vocab)

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) nodes, (B,) tokens -> (B,) child nodes, -1 where the token is not a valid continuation."""
        nodes = nodes.long().to(self.node_token.device)
        tokens = tokens.long().to(self.node_token.device)
        ok = self._valid(nodes) & (tokens >= 0) & (tokens < self.vocab)
        safe_n = torch.where(ok, nodes, torch.zeros_like(nodes))
        safe_t = torch.where(ok, tokens, torch.zeros_like(tokens))
        if self.dense_table is not None:
            internal = ok & (safe_n < self.n_internal)
            child = self.dense_table[torch.where(internal, safe_n, torch.zeros_like(safe_n)), safe_t].long()
            return torch.where(internal, child, torch.full_like(child, -1))
        if self.n_nodes == 1:
            return torch.full_like(nodes, -1)
        keys = safe_n * self.vocab + safe_t  # (B,)
        pos = torch.searchsorted(self.edge_keys, keys).clamp(max=self.edge_keys.shape[0] - 1)
        hit = ok & (self.edge_keys[pos] == keys)
        return torch.where(hit, pos + 1, torch.full_like(pos, -1))

    def item_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B,) nodes -> (B,) item id at a leaf (depth D), -1 for internal or invalid nodes."""
        nodes = nodes.long().to(self.node_token.device)
        valid = self._valid(nodes)
        items = self.node_item[torch.where(valid, nodes, torch.zeros_like(nodes))]
        return torch.where(valid, items, torch.full_like(items, -1))

    def walk(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, D) codes -> (B,) item ids (-1 where the code is not in the trie)."""
        nodes = torch.zeros(codes.shape[0], dtype=torch.long, device=self.node_token.device)
        for d in range(codes.shape[1]):
            nodes = self.step(nodes, codes[:, d])
        return self.item_at(nodes)

    def codes(self) -> np.ndarray:
        """The (I, D) code of every item held by the trie (row i = item i), read back from the nodes."""
        leaves = torch.nonzero(self.node_item >= 0).flatten()
        out = torch.empty(len(leaves), self.depth, dtype=torch.long)
        nodes = leaves.cpu()
        parent, token = self.node_parent.cpu(), self.node_token.cpu()
        for d in range(self.depth - 1, -1, -1):
            out[:, d] = token[nodes]
            nodes = parent[nodes]
        result = torch.empty_like(out)
        result[self.node_item.cpu()[leaves]] = out
        return result.numpy()

    @property
    def n_items(self) -> int:
        return int((self.node_item >= 0).sum())

    def to(self, device: str | torch.device) -> CodeTrie:
        """Move every lookup tensor to ``device`` (in place) and return self."""
        for name in ("node_token", "node_parent", "child_ptr", "node_item", "edge_keys"):
            setattr(self, name, getattr(self, name).to(device))
        if self.dense_table is not None:
            self.dense_table = self.dense_table.to(device)
        return self

    # ----------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write ``trie.safetensors`` (``path`` is the file or a directory to hold it)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.is_dir() or path.suffix != ".safetensors":
            path = path / TRIE_FILE
        tensors = {
            "node_token": self.node_token.cpu().contiguous(),
            "node_parent": self.node_parent.cpu().contiguous(),
            "child_ptr": self.child_ptr.cpu().contiguous(),
            "node_item": self.node_item.cpu().contiguous(),
            "level_sizes": torch.tensor(self.level_sizes, dtype=torch.long),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "onerec.CodeTrie/1"})
        return path

    @classmethod
    def load(cls, path: str | Path, dense_max_bytes: int = DENSE_MAX_BYTES) -> CodeTrie:
        """Load a trie written by :meth:`save` (``path`` is the file or the tokenizer directory)."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir():
            path = path / TRIE_FILE
        if not path.is_file():
            raise OnerecError(f"missing trie file: {path}")
        t = load_file(str(path))
        missing = {"node_token", "node_parent", "child_ptr", "node_item", "level_sizes"} - set(t)
        if missing:
            raise OnerecError(f"{path}: not a CodeTrie file (missing tensors {sorted(missing)})")
        return cls(
            t["node_token"], t["node_parent"], t["child_ptr"], t["node_item"],
            t["level_sizes"].tolist(), dense_max_bytes,
        )
