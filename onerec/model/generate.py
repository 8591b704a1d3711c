"""Trie-constrained batched beam search that writes sessions of m distinct items (ONEREC.md section 4).

Design choices
- One beam search over code tokens: for each of the m items, D constrained steps. At every step each
  beam's next-token log-probs (the level-local softmax, the same as in training and ``sequence_logp``) are
  masked to the tokens the trie allows from the beam's node, the best ``beam_size`` (beam, token) pairs
  of each request survive (``topk`` over beams x tokens, sorted best first), and after D steps the leaf
  names the item. Beam scores are sums of *unrenormalised* log-probs, so ``logp == model.sequence_logp``.
- No repeats and ``exclude``: a beam's banned items (already chosen in its session, plus the request's
  excluded items) must never complete. Masking only leaves is not enough: a prefix whose every completion
  is banned would strand the beam. So a token is allowed only if the subtree it leads to still holds a
  non-banned item: ``node_count[child] - banned_under(child) > 0``, where ``node_count`` is the number of
  items under each trie node (computed once from the items' node paths) and ``banned_under`` counts the
  beam's banned items whose path passes through that child. Every surviving prefix therefore completes to
  a valid, new item, even in tiny catalogues.
- Too few candidates: if fewer than ``beam_size`` distinct sessions exist, the missing beams come back
  with items -1 and logp -inf (last, since beams are sorted). Fewer than m allowed items is an error.
- Two scorers behind one search loop (:class:`DecodeMode`): ``cached`` keeps a decoder self-attention KV
  cache that follows the beams and feeds one new token per step (two at an item boundary: the last code
  and the next BOS); ``full`` is the reference that re-runs the whole decoder on every beam's full prefix
  each step. Both use cross-attention keys/values projected once per request (and its additive memory
  mask, built once), and skip the MoE router statistics. Same search loop, so the two give the same
  sessions; tests and the benchmark assert it.
- What the cached scorer does not repeat (at 4 requests x 16 beams a step is a few dozen small matmuls,
  so per-step copies and small ops decide how far it gets ahead of ``full``; benchmarks/bench_model.py):
  the leading BOS is decoded once per request and fanned out to the beams through the cache; the cache
  is two preallocated position-major buffers per layer, and a beam step's parent gather is one
  ``index_select`` into the spare buffer, fused with the append (no ``cat``, no allocation:
  :class:`~onerec.model.layers.KVCache`); and the last decoder block runs cross-attention and FFN for
  the newest position only (``decode(last_only=True)``: at an item boundary the last code's state is
  needed only as keys/values).
- The copy head (``model.copy_head``) needs each beam's prefix: the history items whose trie path passes
  through the beam's node are exactly those sharing its written codes, so the pointer reads the same
  candidates as in training and the beam scores stay equal to ``sequence_logp``.
- The item head (``model.item_head``, weight ``model.item_head_weight`` > 0): the search is over
  ``gen logp + w * item logp``, the item head's distribution spread over the trie. At each item's BOS the
  head's item probabilities are summed into every trie node (the subtree's mass M), and the step from node
  to child adds ``w * (log M(child) - log M(node))``; the sum telescopes to ``w * log p_head(item)`` at the
  leaf (M(root) = 1), so the dense scores guide the search at every level, not only at the leaf. The mass
  is computed once per request for the first item (all beams share its BOS state) and per beam after; a
  subtree's log-mass is floored at ``log(tiny float32)`` relative to the request's top item. Beam scores
  are then ``sequence_logp + w * sum of item-head log-probs``; with weight 0 (or no head) nothing changes.
- Deterministic: no sampling; ``topk`` ties resolve the same way on every run.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from onerec.io import OnerecError
from onerec.model.layers import KVCache
from onerec.model.onerec import BOS, OneRec


class DecodeMode(str, enum.Enum):
    """How the decoder is evaluated at each beam-search step."""

    CACHED = "cached"  # KV cache for self-attention, one new token per step
    FULL = "full"  # reference: recompute the decoder over the whole prefix every step


@dataclass
class SessionBeams:
    """The N best sessions per request, best first."""

    items: torch.Tensor  # (B, N, m) long; -1 only for beams that could not be filled
    logp: torch.Tensor  # (B, N) float; sum of the code tokens' log-probs (-inf for unfilled beams)


class TrieCounts:
    """Each item's node path in the trie and the number of items under each node."""

    def __init__(self, trie: Any, item_codes: torch.Tensor) -> None:
        n_items, depth = item_codes.shape
        if int(trie.depth) != depth:
            raise OnerecError(f"trie depth {trie.depth} != model code depth {depth}")
        nodes = torch.full((n_items,), int(trie.root), dtype=torch.long, device=item_codes.device)
        path = [nodes]
        for d in range(depth):
            nodes = trie.step(nodes, item_codes[:, d]).to(item_codes.device)
            path.append(nodes)
        self.path = torch.stack(path, dim=1)  # (I, D + 1)
        leaf_items = trie.item_at(nodes).to(item_codes.device)
        wrong = int((leaf_items != torch.arange(n_items, device=item_codes.device)).sum())
        if wrong:
            raise OnerecError(f"trie and model codes disagree on {wrong} of {n_items} items (other tokenizer?)")
        self.node_count = torch.bincount(self.path.reshape(-1), minlength=int(self.path.max()) + 1)  # (nodes,)
        self.node_count_pad = torch.cat([self.node_count, self.node_count.new_zeros(1)])  # [-1] (no child) = 0


class _CachedScorer:
    """Decoder with the self-attention KV cache: one forward per step over the new token(s) only; ``length``
    (the decoder positions the search will use) sizes the cache's buffers."""

    def __init__(self, model: OneRec, cross: list, memory_mask: torch.Tensor, group: int, length: int) -> None:
        self.model, self.cross, self.memory_mask, self.group = model, cross, memory_mask, group
        self.cache = KVCache(model.config.decoder_layers, capacity=length)

    def start(self) -> torch.Tensor:
        """Hidden (B * group, C) at the leading BOS. Every beam of a request has the same BOS prefix, so it
        is decoded once per request and the cache fans out to the beams (one row gather, no recompute)."""
        b = self.memory_mask.shape[0]
        bos = torch.full((b, 1), BOS, dtype=torch.long, device=self.memory_mask.device)
        hidden, _ = self.model.decode(bos, self.cross, self.memory_mask, group=1, cache=self.cache,
                                      router_stats=False)
        fan_out = torch.arange(b, device=bos.device).repeat_interleave(self.group)  # (B * group,)
        self.cache.reorder(fan_out)
        return hidden[:, -1].index_select(0, fan_out)

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (BN, T) -> hidden (BN, C) of the last new position."""
        hidden, _ = self.model.decode(tokens, self.cross, self.memory_mask, start=self.cache.length,
                                      group=self.group, cache=self.cache, router_stats=False, last_only=True)
        return hidden[:, -1]


class _FullScorer:
    """Reference: the whole decoder over every beam's full prefix at every step (``length`` is unused)."""

    def __init__(self, model: OneRec, cross: list, memory_mask: torch.Tensor, group: int, length: int) -> None:
        self.model, self.cross, self.memory_mask, self.group = model, cross, memory_mask, group
        b = memory_mask.shape[0] * group
        self.prefix = torch.empty(b, 0, dtype=torch.long, device=memory_mask.device)

    def start(self) -> torch.Tensor:
        return self.feed(torch.full((self.prefix.shape[0], 1), BOS, dtype=torch.long, device=self.prefix.device))

    def reorder(self, index: torch.Tensor) -> None:
        self.prefix = self.prefix[index]

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        self.prefix = torch.cat([self.prefix, tokens], dim=1)
        hidden, _ = self.model.decode(self.prefix, self.cross, self.memory_mask, group=self.group,
                                      router_stats=False)
        return hidden[:, -1]


def _dedup_rows(items: torch.Tensor) -> torch.Tensor:
    """(B, e) item ids -> same shape with repeats within a row (and negatives) set to -1."""
    items, _ = items.sort(dim=1)
    repeat = torch.zeros_like(items, dtype=torch.bool)
    repeat[:, 1:] = items[:, 1:] == items[:, :-1]
    return items.masked_fill(repeat | (items < 0), -1)


def generate_sessions(
    model: OneRec,
    trie: Any,
    history: torch.Tensor,
    n_items: int,
    beam_size: int,
    exclude: torch.Tensor | None = None,
    history_ts: torch.Tensor | None = None,
    mode: DecodeMode | str = DecodeMode.CACHED,
    counts: TrieCounts | None = None,
    spread: bool = False,
) -> SessionBeams:
    """Beam search for sessions of ``n_items`` distinct items per request.

    history (B, n) item ids padded with -1; exclude (B, e) items that must not appear (-1 = padding);
    ``counts`` may be passed to reuse the trie bookkeeping across calls. Returns SessionBeams (B, N, m), best first.
    ``spread``: the N beams keep N distinct first items (the N best first items; each beam then extends only
    itself, token by token, with its own best continuation), instead of the joint search whose beams tend to
    share most of their items."""
    was_training = model.training
    if any(module.training for module in model.modules()):  # eval() sets every module: only when needed
        model.eval()
    try:
        with torch.inference_mode():  # cheaper than no_grad: no version counters or view tracking
            beams = _beam_search(model, trie, history, n_items, beam_size, exclude, history_ts, DecodeMode(mode),
                                 counts, spread)
        # clone outside inference mode: callers may feed the sessions to a model with autograd on (DPO)
        return SessionBeams(items=beams.items.clone(), logp=beams.logp.clone())
    finally:
        if was_training:
            model.train()


def _beam_search(model: OneRec, trie: Any, history: torch.Tensor, m: int, n_beams: int,
                 exclude: torch.Tensor | None, history_ts: torch.Tensor | None, mode: DecodeMode,
                 counts: TrieCounts | None, spread: bool = False) -> SessionBeams:
    device = model.item_codes.device
    history = history.to(device)
    b, d, v = history.shape[0], model.depth, max(model.level_sizes)
    if m < 1 or n_beams < 1:
        raise OnerecError(f"n_items ({m}) and beam_size ({n_beams}) must be >= 1")
    if m > model.config.max_session_items:
        raise OnerecError(f"n_items={m} exceeds model.max_session_items={model.config.max_session_items}")
    counts = counts or _trie_counts(trie, model.item_codes)
    bn = b * n_beams
    if exclude is None:
        exclude = torch.empty(b, 0, dtype=torch.long, device=device)
    exclude = _dedup_rows(exclude.to(device).long())
    model._check_items(exclude, "exclude")
    n_excluded = (exclude >= 0).sum(dim=1)  # (B,)
    if int((model.n_items - n_excluded).min()) < m:
        raise OnerecError(f"a request excludes {int(n_excluded.max())} of {model.n_items} items, leaving "
                          f"fewer than n_items={m}")

    memory, memory_mask = model.encode(history, None if history_ts is None else history_ts.to(device))
    cross = model.cross_kv(memory)  # once per request, shared by its beams
    copy = model.copy_context(history, memory, memory_mask)  # None without the copy head
    # additive form of the mask, built once (SDPA would convert the bool mask in every layer at every step)
    memory_mask = memory.new_zeros(memory_mask.shape).masked_fill(~memory_mask, float("-inf"))
    scorer_cls = _CachedScorer if mode is DecodeMode.CACHED else _FullScorer
    scorer = scorer_cls(model, cross, memory_mask, n_beams, m * (d + 1))

    logp = torch.full((b, n_beams), float("-inf"), device=device)
    logp[:, 0] = 0.0  # one live beam per request to start
    node = torch.full((bn,), int(trie.root), dtype=torch.long, device=device)
    items = torch.full((bn, m), -1, dtype=torch.long, device=device)
    banned = exclude.repeat_interleave(n_beams, dim=0)  # (BN, e)
    row_base = (torch.arange(b, device=device) * n_beams)[:, None]  # (B, 1)
    hidden = scorer.start()  # (BN, C) at the leading BOS
    dense_w = model.item_head_weight if model.item_q is not None else 0.0
    for i in range(m):
        all_banned = torch.cat([banned, items[:, :i]], dim=1)  # (BN, e + i)
        if dense_w:  # item-head log-mass of every trie node: per request for the first item, per beam after
            source = hidden[::n_beams] if i == 0 else hidden
            log_mass = _item_log_mass(model, source, counts, copy, b)  # (R, nodes)
            mass_row = torch.arange(bn, device=device) // (n_beams if i == 0 else 1)  # (BN,) row of each beam
        for j in range(d):
            step_logp = _step_logp(model, hidden, j, copy, counts, node, b)  # (BN, K_j)
            if step_logp.shape[1] < v:
                step_logp = F.pad(step_logp, (0, v - step_logp.shape[1]), value=float("-inf"))  # (BN, V)
            children = _fit(trie.children(node).to(device), v, -1)  # (BN, V) child node per token, -1 = none
            if dense_w:  # + w (log M(child) - log M(node)): telescopes to w * item-head log-prob at the leaf
                here = log_mass[mass_row, node.clamp(min=0)]  # (BN,)
                step_logp = step_logp + dense_w * (log_mass[mass_row[:, None], children.clamp(min=0)] - here[:, None])
            if all_banned.shape[1]:  # (implies children >= 0: a missing child holds no item)
                allowed = _has_unbanned_item(counts, node, children, j, all_banned, model.item_codes)
            else:
                allowed = children >= 0
            scores = torch.where(allowed, step_logp, float("-inf")).add_(logp.reshape(bn, 1))  # (BN, V)
            if spread and i > 0:  # each beam keeps its own best token: the first items stay distinct
                logp, tok = scores.view(b, n_beams, v).max(dim=2)  # (B, N)
                flat = torch.arange(n_beams, device=device) * v + tok
            else:
                logp, flat = scores.view(b, n_beams * v).topk(n_beams, dim=1)  # (B, N) sorted best first
            parent = (row_base + flat // v).reshape(bn)  # (BN,) rows of the parents
            token = (flat % v).reshape(bn)  # (BN,) level-local token
            alive = torch.isfinite(logp).reshape(bn)
            node = torch.where(alive, children[parent, token], torch.full_like(node, -1))
            items, all_banned = items[parent], all_banned[parent]
            if dense_w:
                mass_row = mass_row[parent]
            scorer.reorder(parent)
            last_step = i == m - 1 and j == d - 1
            if last_step:
                break
            # global id of the chosen token (dead beams may hold any index < V: feed them BOS)
            new = torch.where(alive, token + model.level_offsets[j], torch.full_like(token, BOS))
            if j == d - 1:  # item complete: record it, start the next one from the root
                items[:, i] = torch.where(alive, trie.item_at(node).to(device), torch.full_like(token, -1))
                node = torch.where(alive, torch.full_like(node, int(trie.root)), node)
                hidden = scorer.feed(torch.stack([new, torch.full_like(new, BOS)], dim=1))
            else:
                hidden = scorer.feed(new[:, None])
    items[:, m - 1] = torch.where(alive, trie.item_at(node).to(device), torch.full_like(node, -1))
    items = items.view(b, n_beams, m)
    if spread and m > 1:  # beams extended in place: sort them best first again
        logp, order = logp.sort(dim=1, descending=True)
        items = items.gather(1, order[..., None].expand(-1, -1, m))
    items = items.masked_fill(~torch.isfinite(logp)[..., None], -1)
    return SessionBeams(items=items, logp=logp)


def _step_logp(model: OneRec, hidden: torch.Tensor, level: int, copy: Any, counts: TrieCounts,
               node: torch.Tensor, b: int) -> torch.Tensor:
    """(BN, C) beam states -> (BN, K_level) next-token log-probs. With the copy head, the pointer's candidates
    are the request's history items on the beam's trie node (their path passes through it: same prefix)."""
    if copy is None:
        return torch.log_softmax(model.level_logits(hidden, level).float(), dim=-1)
    on_node = counts.path[copy.items.clamp(min=0), level][:, None, :] == node.view(b, -1, 1)  # (B, N, S)
    match = on_node & (copy.items >= 0)[:, None, :]
    return model.level_logp(hidden.view(b, -1, hidden.shape[-1]), level, copy, match).flatten(0, 1)


def _item_log_mass(model: OneRec, hidden: torch.Tensor, counts: TrieCounts, copy: Any, b: int) -> torch.Tensor:
    """(R, C) BOS states of b requests (R = b or b * beams) -> (R, nodes) log of the item head's probability mass
    under each trie node (floored)."""
    logp = model.item_logp(hidden.view(b, -1, hidden.shape[-1]), copy).flatten(0, 1)  # (R, I)
    top = logp.max(dim=1, keepdim=True).values
    prob = (logp - top).exp()
    mass = prob.new_zeros(prob.shape[0], counts.node_count.shape[0])
    for column in counts.path.T:  # root, level-1 nodes, ..., leaves: each item adds its mass along its path
        mass.index_add_(1, column, prob)
    return mass.clamp_min(torch.finfo(mass.dtype).tiny).log() + top


def _fit(table: torch.Tensor, v: int, fill: int) -> torch.Tensor:
    """(BN, V_trie) -> (BN, v): a trie built without explicit level sizes may have a narrower vocabulary."""
    if table.shape[1] >= v:
        return table[:, :v]
    return torch.cat([table, table.new_full((table.shape[0], v - table.shape[1]), fill)], dim=1)


def _trie_counts(trie: Any, item_codes: torch.Tensor) -> TrieCounts:
    """TrieCounts of (trie, codes), memoised per trie object (weakly) while the codes are the same."""
    weights = torch.arange(1, item_codes.numel() + 1, device=item_codes.device).view_as(item_codes)
    key = (tuple(item_codes.shape), str(item_codes.device), int((item_codes * weights).sum()))  # content
    try:
        hit = _COUNTS.get(trie)
    except TypeError:  # not weak-referenceable
        return TrieCounts(trie, item_codes)
    if hit is not None and hit[0] == key:
        return hit[1]
    counts = TrieCounts(trie, item_codes)
    _COUNTS[trie] = (key, counts)
    return counts


_COUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_unbanned_item(counts: TrieCounts, node: torch.Tensor, children: torch.Tensor, level: int,
                       banned: torch.Tensor, item_codes: torch.Tensor) -> torch.Tensor:
    """(BN, V) bool: token t from the beam's node leads to a subtree holding an item the beam may still use.

    node (BN,) at depth ``level``, children (BN, V) its child per token (-1 = none); banned (BN, e) item ids
    (-1 = none), distinct within a row."""
    under = counts.node_count_pad[children]  # (BN, V) items under each child (child -1 reads the padding 0)
    safe = banned.clamp(min=0)
    on_path = (counts.path[safe, level] == node[:, None]) & (banned >= 0)  # (BN, e) banned item below node
    under.scatter_add_(1, item_codes[safe, level], on_path.long().neg_())  # minus the banned items under it
    return under > 0


@torch.no_grad()
def generate_next_items(
    model: OneRec,
    trie: Any,
    history: torch.Tensor,
    k: int,
    beam_size: int,
    exclude: torch.Tensor | None = None,
    history_ts: torch.Tensor | None = None,
    mode: DecodeMode | str = DecodeMode.CACHED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k distinct items for the next position (leave-one-out protocol): a one-item beam search with
    ``beam_size >= k`` beams. Returns items (B, k) long and their log-probs (B, k), best first."""
    if beam_size < k:
        raise OnerecError(f"beam_size={beam_size} must be >= k={k} to return k distinct items")
    beams = generate_sessions(model, trie, history, 1, beam_size, exclude, history_ts, mode)
    return beams.items[:, :k, 0], beams.logp[:, :k]
