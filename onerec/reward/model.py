"""The session-wise reward model R(u, S) (ONEREC.md §5), read top to bottom: encoders, block, model.

Design choices
- Item representation ``v_i`` = id embedding + hashed item features (+ a projection of the content
  embedding ``EMB`` when given), layer-normed. Items never seen in training (and a random ``id_dropout``
  share of training items) use one shared *fallback* id row, so any catalogue item can be scored from
  its features alone. Ids outside the catalogue are an error, never silently mapped.
- User tower: attention pooling (a learned query) and mean pooling of the history's item
  representations, plus user features when ``users`` are given (a learned "missing" vector otherwise,
  trained by ``user_feature_dropout``), then an MLP. An empty history uses a learned "empty" vector.
- Target-aware items ``e_i = v_i ⊙ u``; pre-norm self-attention blocks inside each session (queries and keys
  from ``e_i``, or with ``attention_keys = "item"`` from ``v_i`` so the attention pattern is user-free);
  ``match_features`` adds, per item, a projection of log1p(how many other session items share each categorical
  feature slot: same author, same primary tag ...), what fatigue / diversity effects depend on; with
  ``position = False`` (default) there is no position embedding, so item-level outputs permute with the
  items and session outputs are invariant to their order. ``attention = False`` keeps the blocks'
  feed-forward part and drops the attention: the pointwise baseline with the same features.
- Session pooling: masked mean and masked sum / ``max_session_len`` of the block outputs (both order
  free; the sum lets the session towers see how many items there are).
- One sigmoid tower per target, twice: per item (item labels) and per session (session labels).
  ``reward = Σ_t weights[t] · p_t`` over the session towers.
- ``score`` runs in eval mode without gradients and validates ids; ``forward`` returns logits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onerec.config import from_dict, to_dict
from onerec.io import OnerecError, atomic_path, write_json
from onerec.reward import RewardConfig

CATALOG_KEYS = ("item_idx", "item_num", "content", "item_known", "user_idx", "user_num")
FORMAT_VERSION = 1


class FeatureEncoder(nn.Module):
    """Mean of hashed category embeddings plus a linear map of numeric features."""

    def __init__(self, vocab: int, n_numeric: int, d: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, d)
        self.numeric = nn.Linear(n_numeric, d) if n_numeric else None

    def forward(self, idx: Tensor, numeric: Tensor) -> Tensor:
        mask = (idx >= 0).unsqueeze(-1)  # (N, K, 1)
        emb = self.table(idx.clamp(min=0)) * mask  # (N, K, d)
        out = emb.sum(1) / mask.sum(1).clamp(min=1)  # (N, d)
        if self.numeric is not None:
            out = out + self.numeric(numeric)
        return out


class ItemEncoder(nn.Module):
    """``v_i`` for catalogue items: id (or fallback) embedding + features (+ content embedding)."""

    def __init__(self, catalog: dict[str, Tensor], item_vocab: int, d: int) -> None:
        super().__init__()
        self.n_items = catalog["item_idx"].shape[0]
        for key in ("item_idx", "item_num", "content", "item_known"):
            self.register_buffer(key, catalog[key])
        self.id_emb = nn.Embedding(self.n_items + 1, d)  # row n_items = fallback for unseen items
        self.features = FeatureEncoder(item_vocab, catalog["item_num"].shape[1], d)
        self.content_proj = nn.Linear(catalog["content"].shape[1], d) if catalog["content"].shape[1] else None
        self.norm = nn.LayerNorm(d)

    def forward(self, items: Tensor, id_drop: Tensor | None = None) -> Tensor:
        flat = items.reshape(-1)  # (N,) ids in 0..I-1
        # features are computed once per distinct item of the batch (histories repeat items a lot)
        uniq, inv = torch.unique(flat, return_inverse=True)  # (U,), (N,)
        feat = self.features(self.item_idx[uniq], self.item_num[uniq])  # (U, d)
        if self.content_proj is not None:
            feat = feat + self.content_proj(self.content[uniq])
        with_id = self.norm(self.id_emb(uniq) + feat)  # (U, d)
        fallback = self.norm(self.id_emb.weight[self.n_items] + feat)  # (U, d)
        use_id = self.item_known[flat]
        if id_drop is not None:
            use_id = use_id & ~id_drop.reshape(-1)
        v = torch.where(use_id[:, None], with_id[inv], fallback[inv])  # (N, d)
        return v.reshape(*items.shape, -1)  # (..., d)


class UserTower(nn.Module):
    """u from the history's item representations (attention + mean pooling) and user features."""

    def __init__(self, catalog: dict[str, Tensor], user_vocab: int, d: int) -> None:
        super().__init__()
        self.register_buffer("user_idx", catalog["user_idx"])
        self.register_buffer("user_num", catalog["user_num"])
        self.query = nn.Parameter(torch.zeros(d))
        self.empty = nn.Parameter(torch.zeros(2 * d))
        self.missing_user = nn.Parameter(torch.zeros(d))
        self.features = FeatureEncoder(user_vocab, catalog["user_num"].shape[1], d)
        self.mlp = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, hist: Tensor, hist_mask: Tensor, users: Tensor | None, user_drop: Tensor | None) -> Tensor:
        B, _, d = hist.shape
        scores = (hist @ self.query) / math.sqrt(d)  # (B, n)
        scores = scores.masked_fill(~hist_mask, float("-inf"))
        has = hist_mask.any(1)  # (B,)
        att = torch.softmax(torch.where(has[:, None], scores, torch.zeros_like(scores)), dim=1) * hist_mask
        att_pool = (att.unsqueeze(-1) * hist).sum(1)  # (B, d)
        mean_pool = (hist * hist_mask.unsqueeze(-1)).sum(1) / hist_mask.sum(1, keepdim=True).clamp(min=1)
        pooled = torch.cat([att_pool, mean_pool], dim=-1)  # (B, 2d)
        pooled = torch.where(has[:, None], pooled, self.empty.expand(B, -1))
        user_vec = self.missing_user.expand(B, -1)
        if users is not None:
            known = self.features(self.user_idx[users], self.user_num[users])  # (B, d)
            keep = torch.ones(B, dtype=torch.bool, device=hist.device) if user_drop is None else ~user_drop
            user_vec = torch.where(keep[:, None], known, user_vec)
        return self.mlp(torch.cat([pooled, user_vec], dim=-1))  # (B, d)


class SessionBlock(nn.Module):
    """Pre-norm self-attention (optional) + feed-forward over the items of one session."""

    def __init__(self, d: int, n_heads: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.n_heads, self.dropout, self.attention = n_heads, dropout, attention
        if attention:
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            # the key bias shifts every score of a query alike, so softmax ignores it and its true gradient is 0;
            # kept at exactly 0 (Adam would otherwise turn float noise in that gradient into lr-sized steps)
            keep = torch.ones(3 * d)
            keep[d:2 * d] = 0.0
            self.register_buffer("qkv_bias_keep", keep, persistent=False)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor, mask: Tensor, keys: Tensor | None = None) -> Tensor:
        """``keys``: what queries and keys are computed from (default ``x``; values always come from ``x``)."""
        N, m, d = x.shape
        if self.attention:
            bias = self.qkv.bias * self.qkv_bias_keep
            q, k, v = F.linear(self.ln1(x), self.qkv.weight, bias).split(d, dim=-1)  # (N, m, d) each
            if keys is not None:
                q, k, _ = F.linear(self.ln1(keys), self.qkv.weight, bias).split(d, dim=-1)
            q, k, v = (t.view(N, m, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
            attn_mask = mask[:, None, None, :]  # (N, 1, 1, m): attend to real items only
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.dropout if self.training else 0.0)
            x = x + self.proj(y.transpose(1, 2).reshape(N, m, d))
        return x + self.mlp(self.ln2(x))


def _tower(d_in: int, d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, 1))


class RewardModel(nn.Module):
    """R(u, S): session and item probabilities per tower for candidate sessions of a user."""

    def __init__(self, config: RewardConfig, towers: list[str], catalog: dict[str, Any], meta: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.towers = list(towers)
        self.meta = dict(meta)
        tensors = {k: torch.as_tensor(np.asarray(catalog[k])) for k in CATALOG_KEYS}
        for key in ("item_idx", "user_idx"):
            tensors[key] = tensors[key].long()
        for key in ("item_num", "content", "user_num"):
            tensors[key] = tensors[key].float()
        tensors["item_known"] = tensors["item_known"].bool()
        self.n_items = int(tensors["item_idx"].shape[0])
        self.n_users = int(tensors["user_idx"].shape[0])
        d = config.d_model
        # torch's layers draw their default init from the global RNG: fork it so building a model has no
        # side effect (``init_weights`` sets the real, seeded values)
        with torch.random.fork_rng(devices=[]):
            self._build(config, tensors, meta, d)

    def _build(self, config: RewardConfig, tensors: dict[str, Tensor], meta: dict[str, Any], d: int) -> None:
        self.item_encoder = ItemEncoder(tensors, int(meta["item_vocab"]), d)
        self.user_tower = UserTower(tensors, int(meta["user_vocab"]), d)
        self.pos_emb = nn.Parameter(torch.zeros(config.max_session_len, d)) if config.position else None
        self.blocks = nn.ModuleList(
            SessionBlock(d, config.n_heads, config.dropout, config.attention) for _ in range(config.n_layers)
        )
        self.match_proj = nn.Linear(tensors["item_idx"].shape[1], d) if config.match_features else None
        self.ln_f = nn.LayerNorm(d)
        self.item_heads = nn.ModuleDict({t: _tower(d, d) for t in self.towers})
        self.session_heads = nn.ModuleDict({t: _tower(2 * d, d) for t in self.towers})

    def init_weights(self, generator: torch.Generator) -> None:
        """Seeded initialisation of every parameter (same generator state -> same weights)."""
        for name, p in self.named_parameters():
            if name.endswith("bias") or p.dim() == 1 and ("ln" in name or "norm" in name):
                nn.init.zeros_(p) if name.endswith("bias") else nn.init.ones_(p)
            elif p.dim() == 1 or name == "pos_emb":
                nn.init.normal_(p, 0.0, 0.02, generator=generator)
            else:
                nn.init.normal_(p, 0.0, 1.0 / math.sqrt(p.shape[-1]), generator=generator)

    def forward(
        self,
        history: Tensor,
        sessions: Tensor,
        users: Tensor | None = None,
        id_drop: tuple[Tensor, Tensor] | None = None,
        user_drop: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Logits: session level ``{t: (B, S)}`` and item level ``{t: (B, S, m)}`` (ids already checked)."""
        B, S, m = sessions.shape
        hist_mask = history >= 0  # (B, n)
        hist_v = self.item_encoder(history.clamp(min=0), None if id_drop is None else id_drop[0])  # (B, n, d)
        u = self.user_tower(hist_v, hist_mask, users, user_drop)  # (B, d)
        mask = (sessions >= 0).reshape(B * S, m)  # (BS, m)
        v = self.item_encoder(sessions.clamp(min=0), None if id_drop is None else id_drop[1])  # (B, S, m, d)
        h = (v * u[:, None, None, :]).reshape(B * S, m, -1)  # e_i = v_i ⊙ u, (BS, m, d)
        if self.match_proj is not None:
            h = h + self.match_proj(self.match_counts(sessions.reshape(B * S, m)))
        keys = v.reshape(B * S, m, -1) if self.config.attention_keys == "item" else None
        if self.pos_emb is not None:
            h = h + self.pos_emb[:m]
            keys = None if keys is None else keys + self.pos_emb[:m]
        for block in self.blocks:
            h = block(h, mask, keys)
        h = self.ln_f(h) * mask.unsqueeze(-1)  # (BS, m, d), padding zeroed
        count = mask.sum(1, keepdim=True).clamp(min=1)  # (BS, 1)
        pooled = torch.cat([h.sum(1) / count, h.sum(1) / self.config.max_session_len], dim=-1)  # (BS, 2d)
        session = {t: self.session_heads[t](pooled).view(B, S) for t in self.towers}
        item = {t: self.item_heads[t](h).view(B, S, m) for t in self.towers}
        return session, item

    def match_counts(self, sessions: Tensor) -> Tensor:
        """(N, m) item ids (-1 padding) -> (N, m, slots) log1p(number of other real items of the session whose
        categorical feature slot holds the same value); 0 on padding and on empty slots."""
        idx = self.item_encoder.item_idx[sessions.clamp(min=0)]  # (N, m, slots)
        real = (sessions >= 0)[..., None] & (idx >= 0)  # (N, m, slots)
        same = (idx[:, :, None, :] == idx[:, None, :, :]) & real[:, :, None, :] & real[:, None, :, :]  # (N, m, m, slots)
        count = same.sum(2) - real.long()  # minus the item itself
        return torch.log1p(count.float())

    # ---- scoring -------------------------------------------------------------------------------------
    def check_inputs(self, history: Tensor, sessions: Tensor, users: Tensor | None) -> None:
        """Raise OnerecError for shapes, unknown item/user ids, empty sessions, too-long sessions."""
        if history.dim() != 2 or sessions.dim() != 3 or history.shape[0] != sessions.shape[0]:
            raise OnerecError(
                f"expected history (B, n) and sessions (B, S, m), got {tuple(history.shape)} and {tuple(sessions.shape)}"
            )
        for name, ids in (("history", history), ("sessions", sessions)):
            bad = (ids < -1) | (ids >= self.n_items)
            if bad.any():
                raise OnerecError(
                    f"{name}: {int(bad.sum())} unknown item id(s) (e.g. {int(ids[bad][0])}); "
                    f"the catalogue has items 0..{self.n_items - 1} and -1 is padding"
                )
        empty = (sessions < 0).all(-1)  # (B, S)
        if sessions.shape[-1] == 0 or empty.any():
            where = tuple(int(i) for i in empty.nonzero()[0]) if empty.any() else ()
            raise OnerecError(f"sessions: {int(empty.sum()) or sessions.shape[1]} empty session(s) (all items -1), first at {where}")
        if self.pos_emb is not None and sessions.shape[-1] > self.config.max_session_len:
            raise OnerecError(f"sessions: {sessions.shape[-1]} items per session > max_session_len {self.config.max_session_len}")
        if users is not None:
            if users.shape != (history.shape[0],):
                raise OnerecError(f"users: expected shape ({history.shape[0]},), got {tuple(users.shape)}")
            bad = (users < 0) | (users >= self.n_users)
            if bad.any():
                raise OnerecError(f"users: {int(bad.sum())} unknown user id(s) (e.g. {int(users[bad][0])}); known 0..{self.n_users - 1}")

    def combine(self, probs: dict[str, Tensor]) -> Tensor:
        """reward = Σ_t weights[t] · p_t over this model's towers."""
        weights = self.config.weights
        return sum(weights.get(t, 0.0) * probs[t] for t in self.towers)

    @torch.no_grad()
    def _eval_logits(self, history: Tensor, sessions: Tensor, users: Tensor | None) -> tuple[Tensor, dict, dict]:
        history, sessions = torch.as_tensor(history).long(), torch.as_tensor(sessions).long()
        users = None if users is None else torch.as_tensor(users).long()
        self.check_inputs(history, sessions, users)
        was_training = self.training
        self.eval()
        try:
            session_logits, item_logits = self(history, sessions, users)
        finally:
            self.train(was_training)
        return sessions, session_logits, item_logits

    def score(self, history: Tensor, sessions: Tensor, users: Tensor | None = None) -> dict[str, Tensor]:
        """``{tower: (B, S)}`` session probabilities plus ``"reward"``; history (B, n), sessions (B, S, m), -1 pads."""
        _, logits, _ = self._eval_logits(history, sessions, users)
        probs = {t: torch.sigmoid(x) for t, x in logits.items()}
        probs["reward"] = self.combine(probs)
        return probs

    def score_items(self, history: Tensor, sessions: Tensor, users: Tensor | None = None) -> dict[str, Tensor]:
        """``{tower: (B, S, m)}`` item-level probabilities in the session's context; NaN at padding."""
        sessions, _, logits = self._eval_logits(history, sessions, users)
        pad = sessions < 0
        return {t: torch.sigmoid(x).masked_fill(pad, float("nan")) for t, x in logits.items()}

    # ---- files ---------------------------------------------------------------------------------------
    def save(self, out_dir: Path) -> None:
        """``reward.safetensors`` (weights and feature tables) and ``reward.json`` into ``out_dir``."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        with atomic_path(out_dir / "reward.safetensors") as tmp:
            save_file(state, str(tmp))
        info = {"format_version": FORMAT_VERSION, "config": to_dict(self.config), "towers": self.towers, "meta": self.meta}
        write_json(out_dir / "reward.json", info)

    @classmethod
    def load(cls, rm_dir: Path) -> RewardModel:
        """The model saved by :meth:`save` in ``rm_dir`` (eval mode)."""
        from safetensors.torch import load_file

        rm_dir = Path(rm_dir)
        path = rm_dir / "reward.safetensors"
        if not path.is_file() or not (rm_dir / "reward.json").is_file():
            raise OnerecError(f"{rm_dir}: not a reward model directory (needs reward.json and reward.safetensors)")
        info = json.loads((rm_dir / "reward.json").read_text())
        if info.get("format_version") != FORMAT_VERSION:
            raise OnerecError(f"{rm_dir / 'reward.json'}: format_version {info.get('format_version')} != {FORMAT_VERSION}")
        state = load_file(str(path))
        prefix = {"item_idx": "item_encoder.", "item_num": "item_encoder.", "content": "item_encoder.",
                  "item_known": "item_encoder.", "user_idx": "user_tower.", "user_num": "user_tower."}
        catalog = {k: state[prefix[k] + k] for k in CATALOG_KEYS}
        model = cls(from_dict(RewardConfig, info["config"], "reward"), info["towers"], catalog, info["meta"])
        model.load_state_dict(state, strict=True)
        return model.eval()
