"""Semantic IDs: the one-to-one map between items and their ``D = L + 1`` tokens.

Design choices
- An item's code is its ``L`` cluster indices (one per residual level) plus one *dedup* token: 0 when
  no other item shares the first ``L`` tokens, else the item's rank (by item id) among the items that
  share them. So item <-> code is one-to-one and ``dedup_size`` is the largest collision group.
- ``codes`` is a dense (I, D) int64 array whose row ``i`` is item ``i`` (items are contiguous ids).
- ``item_of`` maps codes back through a sorted array of mixed-radix keys and ``searchsorted``
  (vectorised, O(B log I)); when the radix product would overflow int64 it falls back to the trie.
- The file is ``codes.parquet`` (``item_id``, ``c0`` .. ``c{L-1}``, ``dedup``) beside ``tokenizer.json``
  (method, levels, codebook_size, dedup_size, n_items, dim), as docs/ARCHITECTURE.md section 4 says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onerec.io import OnerecError, atomic_path, read_json, write_json

CODES_FILE = "codes.parquet"
TOKENIZER_FILE = "tokenizer.json"


def assign_dedup(codes: np.ndarray) -> np.ndarray:
    """(I, L) codes -> (I,) dedup token: each item's rank (by item id) among items with the same code."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.shape[0]
    order = np.lexsort(np.vstack([np.arange(n), codes.T[::-1]]))  # by code, then by item id
    sorted_codes = codes[order]
    new_group = np.ones(n, dtype=bool)
    if n > 1:
        new_group[1:] = np.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    dedup = np.empty(n, dtype=np.int64)
    dedup[order] = np.arange(n) - group_start
    return dedup


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full L-token code is also held by another item (before dedup)."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


class SemanticIds:
    """Item <-> code table; ``codes`` (I, D) int64, ``level_sizes`` [K] * L + [dedup_size]."""

    def __init__(self, codes: np.ndarray, level_sizes: list[int], info: dict[str, Any] | None = None) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(level_sizes):
            raise OnerecError(f"codes of shape {codes.shape} do not match {len(level_sizes)} level sizes")
        bad = (codes < 0) | (codes >= np.asarray(level_sizes)[None, :])
        if bad.any():
            raise OnerecError(f"{int(bad.any(axis=1).sum())} item codes hold tokens outside their level size")
        self.codes = codes  # (I, D)
        self.level_sizes = [int(s) for s in level_sizes]
        self.info = dict(info or {})
        self.depth = len(self.level_sizes)
        self.n_items = codes.shape[0]
        radix = 1
        for s in self.level_sizes:
            radix *= s
        self._radix_ok = radix < 2**62
        if self._radix_ok:
            keys = self._keys(codes)
            self._order = np.argsort(keys, kind="stable")
            self._sorted_keys = keys[self._order]
            if self.n_items > 1 and np.any(self._sorted_keys[1:] == self._sorted_keys[:-1]):
                raise OnerecError("two items share a full code; semantic IDs must be one-to-one")
            self._trie = None
        else:
            from onerec.tokenizer.trie import CodeTrie

            self._trie = CodeTrie.from_codes(codes, self.level_sizes)

    @classmethod
    def from_levels(cls, level_codes: np.ndarray, codebook_size: int, info: dict[str, Any] | None = None) -> SemanticIds:
        """(I, L) cluster indices -> SemanticIds with the dedup token appended."""
        level_codes = np.asarray(level_codes, dtype=np.int64)
        dedup = assign_dedup(level_codes)
        dedup_size = int(dedup.max()) + 1 if len(dedup) else 1
        codes = np.concatenate([level_codes, dedup[:, None]], axis=1)
        return cls(codes, [codebook_size] * level_codes.shape[1] + [dedup_size], info)

    def _keys(self, codes: np.ndarray) -> np.ndarray:
        keys = np.zeros(codes.shape[0], dtype=np.int64)
        for d, size in enumerate(self.level_sizes):
            keys = keys * size + codes[:, d]
        return keys

    def item_of(self, codes: np.ndarray) -> np.ndarray:
        """(B, D) codes -> (B,) item ids, -1 where no item has that code (or a token is out of range)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, self.depth)
        ok = np.all((codes >= 0) & (codes < np.asarray(self.level_sizes)[None, :]), axis=1)
        safe = np.where(ok[:, None], codes, 0)
        if self._trie is not None:
            import torch

            items = self._trie.walk(torch.from_numpy(safe)).numpy()
            return np.where(ok, items, -1)
        keys = self._keys(safe)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), self.n_items - 1)
        hit = ok & (self._sorted_keys[pos] == keys)
        return np.where(hit, self._order[pos], -1)

    # ----------------------------------------------------------------------------------- files
    def save(self, out_dir: str | Path, tokenizer_info: dict[str, Any] | None = None) -> None:
        """Write ``codes.parquet`` and ``tokenizer.json`` into ``out_dir``."""
        import polars as pl

        out_dir = Path(out_dir)
        levels = self.depth - 1
        columns: dict[str, Any] = {"item_id": np.arange(self.n_items, dtype=np.int32)}
        for d in range(levels):
            columns[f"c{d}"] = self.codes[:, d].astype(np.int32)
        columns["dedup"] = self.codes[:, levels].astype(np.int32)
        with atomic_path(out_dir / CODES_FILE) as tmp:
            pl.DataFrame(columns).write_parquet(tmp)
        info = {**self.info, **(tokenizer_info or {})}
        info.update(
            levels=levels,
            codebook_size=self.level_sizes[0] if levels else 0,
            level_sizes=self.level_sizes,
            dedup_size=self.level_sizes[-1],
            n_items=self.n_items,
        )
        write_json(out_dir / TOKENIZER_FILE, info)
        self.info = info

    @classmethod
    def load(cls, tok_dir: str | Path) -> SemanticIds:
        """Read ``codes.parquet`` + ``tokenizer.json`` from a tokenizer directory."""
        import polars as pl

        tok_dir = Path(tok_dir)
        info = read_json(tok_dir / TOKENIZER_FILE)
        path = tok_dir / CODES_FILE
        if not path.is_file():
            raise OnerecError(f"missing file: {path}")
        frame = pl.read_parquet(path)
        levels = int(info["levels"])
        wanted = ["item_id"] + [f"c{d}" for d in range(levels)] + ["dedup"]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise OnerecError(f"{path}: missing columns {missing}")
        item_id = frame["item_id"].to_numpy().astype(np.int64)
        n = len(item_id)
        if n != int(info["n_items"]) or not np.array_equal(np.sort(item_id), np.arange(n)):
            raise OnerecError(f"{path}: item_id must be exactly 0..{int(info['n_items']) - 1}, got {n} rows")
        codes = np.empty((n, levels + 1), dtype=np.int64)
        codes[item_id] = frame.select(wanted[1:]).to_numpy().astype(np.int64)
        level_sizes = info.get("level_sizes") or [int(info["codebook_size"])] * levels + [int(info["dedup_size"])]
        return cls(codes, level_sizes, info)
