"""Harness adapter for generative recommenders (OneRec, TIGER-style): beam search in, ranked items out.

Design choices
- Next item (EVAL.md §1): ``generate_next_items`` with ``beam_size >= k`` gives the k best distinct valid
  items, best first; that list is the ranking.
- Next session (EVAL.md §2): ``generate_sessions`` writes N beams of m items. The ranked list is the top
  beam, then each following beam's items not seen yet (beam order, then position order), so the first m
  entries are exactly the top beam ``G`` and the first K are the union of the top beams.
  ``order="marginal"`` (``eval.union_order``) keeps ``G`` first and ranks the rest of the union by each item's
  share of the beams' probability mass, ``sum over beams containing it of softmax(beam log-probs)``, instead of
  beam order: an item that many likely beams share ranks above one that only a single beam holds.
  ``spread=True`` (``eval.spread_beams``) ranks beams with distinct first items; ``joint_top=True``
  (``eval.spread_top = "joint"``) puts the joint search's top beam in front of them, so ``G`` stays the joint one.
- Every generated beam is kept (``generated``) for the health metrics of EVAL.md §4; beams that the search
  could not fill (log-prob -inf: fewer candidates than beams) are left out of them. In next-item mode the
  k-item ranked list plays the session's part (``duplicate_rate`` = share of lists repeating an item).
- The adapter owns a ``CodeTrie`` built from the model's own ``item_codes`` buffer, so a run evaluates
  without its tokenizer directory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from onerec.evaluate import metrics


def union_of_beams(items: np.ndarray, k: int, logp: np.ndarray | None = None) -> np.ndarray:
    """Beams (B, N, m) -> (B, k): distinct valid items in beam order, then position order; -1 when short.

    With ``logp`` (B, N), the beams' log-probabilities: the top beam's items first (position order), then the
    other items of the union by their beam-probability mass (ties: beam order)."""
    out = np.full((items.shape[0], k), -1, dtype=np.int64)
    for row, beams in enumerate(items):
        flat = beams.reshape(-1)
        keep = flat >= 0
        flat = flat[keep]
        _, first = np.unique(flat, return_index=True)
        ranked = flat[np.sort(first)]
        if logp is not None and len(ranked):
            items_u, mass = _item_mass(beams, logp[row], keep, flat)
            n_top = len(np.unique(beams[0][beams[0] >= 0]))  # ranked starts with the top beam's items
            rest = ranked[n_top:]  # beam order; a stable sort by mass keeps it for ties
            order = np.argsort(-mass[np.searchsorted(items_u, rest)], kind="stable")
            ranked = np.concatenate([ranked[:n_top], rest[order]])
        ranked = ranked[:k]
        out[row, : len(ranked)] = ranked
    return out


def _item_mass(beams: np.ndarray, logp: np.ndarray, keep: np.ndarray,
               flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct items, their mass): per item the sum of the softmax over finite beam log-probs of the
    beams holding it (an item appears at most once per beam)."""
    finite = np.isfinite(logp)
    weight = np.zeros_like(logp, dtype=np.float64)
    if finite.any():
        shifted = np.exp(logp[finite] - logp[finite].max())
        weight[finite] = shifted / shifted.sum()
    beam_of = np.repeat(np.arange(beams.shape[0]), beams.shape[1])[keep]
    items, inverse = np.unique(flat, return_inverse=True)
    mass = np.zeros(len(items))
    np.add.at(mass, inverse, weight[beam_of])
    return items, mass


class GenerativeRecommender:
    """``recommend(history (B, n), k) -> (B, k)`` by trie-constrained beam search over a OneRec model."""

    def __init__(self, model: Any, beam_size: int, m: int = 1, trie: Any = None, spread: bool = False,
                 order: str = "beam", joint_top: bool = False) -> None:
        from onerec.tokenizer.trie import CodeTrie

        self.model = model.eval()
        self.beam_size = beam_size
        self.m = m
        self.spread = spread
        self.joint_top = joint_top and spread  # the joint search's top beam first, then the spread beams
        if order not in ("beam", "marginal"):
            raise ValueError(f"order must be 'beam' or 'marginal', got {order!r}")
        self.order = order
        self.trie = trie if trie is not None else CodeTrie.from_codes(model.item_codes.cpu().numpy())
        self.generated: list[np.ndarray] = []  # each (B, N, m) with unfilled beams removed (set to -1)

    @torch.no_grad()
    def __call__(self, history: np.ndarray, k: int) -> np.ndarray:
        from onerec.model.generate import generate_next_items, generate_sessions

        hist = torch.from_numpy(np.asarray(history, dtype=np.int64))  # (B, n)
        if self.m == 1:
            items, logp = generate_next_items(self.model, self.trie, hist, k, max(self.beam_size, k))  # (B, k)
            items = items.masked_fill(~torch.isfinite(logp), -1).numpy()
            self.generated.append(items[:, None, :])  # (B, 1, k): the ranked list, checked for repeats like a session
            return items.astype(np.int64)
        beams = generate_sessions(self.model, self.trie, hist, self.m, self.beam_size, spread=self.spread)
        if self.joint_top:  # (B, 1 + N, m): the joint search's top beam, then the spread beams (one may repeat it)
            top = generate_sessions(self.model, self.trie, hist, self.m, self.beam_size)
            beams = type(beams)(items=torch.cat([top.items[:, :1], beams.items], dim=1),
                                logp=torch.cat([top.logp[:, :1], beams.logp], dim=1))
        items = beams.items.masked_fill(~torch.isfinite(beams.logp)[..., None], -1).numpy()  # (B, N, m)
        self.generated.append(items)
        logp = beams.logp.numpy() if self.order == "marginal" else None
        return union_of_beams(items, k, logp)

    def health(self) -> dict[str, Any]:
        """EVAL.md §4 over everything generated so far: validity, duplicates, coverage (top beams), code entropy."""
        if not self.generated:
            return {}
        m = self.generated[0].shape[-1]
        beams = np.concatenate([g.reshape(-1, m) for g in self.generated])  # (S, m) all generated sessions
        filled = beams[(beams >= 0).any(axis=1)]
        # the answer each request gets: the top beam's session, or the top-ranked item in next-item mode
        top = np.concatenate([g[:, 0, :1] if self.m == 1 else g[:, 0] for g in self.generated])
        n_items = int(self.model.item_codes.shape[0])
        codes = self.model.item_codes.cpu().numpy()
        out = metrics.health(filled, n_items, codes)
        if self.m == 1:  # a ranked list shorter than K (catalogue or beam exhausted) ends in -1: empty, not invalid
            out["valid_item_rate"] = metrics.valid_item_rate(filled[filled != -1], n_items)
        out["item_coverage_top_beam"] = metrics.item_coverage(top, n_items)
        out["generated_sessions"] = int(len(filled))
        return out
