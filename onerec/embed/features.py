"""Each item's own features as a sparse bag of tokens: the input of both embedding methods.

Design choices
- Generic over sources: every column of ``items.parquet`` except ``item``/``item_orig`` (and
  ``embed.exclude_columns``) is a *field*, typed by its dtype:
  list columns (KuaiRand ``tags``, Amazon ``attributes``, MovieLens ``genres``) -> one token per element;
  text columns (``embed.text_columns``: Amazon ``text``, MovieLens ``title``) -> lower-cased words;
  strings, booleans, ``*_id`` integers (author, music) and numbers with <= ``max_categories`` values
  (upload type, video type) -> one categorical token; other numbers (duration, statistics, year) ->
  one of ``n_buckets`` quantile buckets. Nulls give no token.
- An exact vocabulary, not feature hashing: tokens found in >= ``min_count`` items (a token of a single
  item says nothing about any other item), at most ``max_vocab`` most frequent. Ids are assigned in
  sorted token order, so the same table gives the same vocabulary, with no hash collisions.
- Weights: IDF (``1 + ln((1 + I) / (1 + df))``), L2-normalised within each (item, field), times the
  field weight. So every field contributes one unit-norm block, however many tokens it has: a title of
  eight words does not outweigh the one author token. Numeric fields share one unit of weight
  (``1/sqrt(n_numeric)`` each) so KuaiRand's ~50 statistics do not drown tags/author/music;
  ``embed.field_weights`` overrides any column.
- Output is CSR (``offsets``, ``tokens``, ``weights``), which ``torch.nn.EmbeddingBag`` takes directly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import polars as pl

from onerec.embed import EmbedConfig
from onerec.io import OnerecError

ID_FIELD = "item_id"


@dataclasses.dataclass
class ItemFeatures:
    """Sparse per-item feature bags in CSR form: item i's tokens are ``tokens[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # (I + 1,) int64
    tokens: np.ndarray  # (nnz,) int64, ids into vocab
    weights: np.ndarray  # (nnz,) float32
    vocab: list[str]
    fields: dict[str, dict[str, Any]]  # column -> {kind, weight, tokens, items}

    @property
    def n_items(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return len(self.vocab)

    def rows(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR slice for ``items`` (B,): (tokens (n,), weights (n,), offsets (B,)) for EmbeddingBag."""
        starts = self.offsets[items]
        lengths = self.offsets[items + 1] - starts
        bag_offsets = np.zeros(len(items), dtype=np.int64)
        np.cumsum(lengths[:-1], out=bag_offsets[1:])
        # position of every kept token: its bag's start in the CSR plus its rank inside the bag
        flat = np.repeat(starts - bag_offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return self.tokens[flat], self.weights[flat], bag_offsets

    def dense(self) -> np.ndarray:
        """The (I, V) float32 feature matrix (small catalogues and tests only)."""
        out = np.zeros((self.n_items, self.n_tokens), dtype=np.float32)
        item_of = np.repeat(np.arange(self.n_items), np.diff(self.offsets))
        out[item_of, self.tokens] = self.weights
        return out

    def summary(self) -> dict[str, Any]:
        lengths = np.diff(self.offsets)
        return {
            "vocab": self.n_tokens,
            "nnz": int(len(self.tokens)),
            "tokens_per_item_mean": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
            "items_without_features": int((lengths == 0).sum()),
            "fields": self.fields,
        }


def _field_kind(df: pl.DataFrame, column: str, cfg: EmbedConfig) -> str | None:
    """``list`` | ``text`` | ``categorical`` | ``numeric``; None for a dtype we cannot use."""
    dtype = df.schema[column]
    if isinstance(dtype, (pl.List, pl.Array)):
        return "list"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "text" if column in cfg.text_columns else "categorical"
    if dtype == pl.Boolean:
        return "categorical"
    if dtype.is_integer() or dtype.is_float():
        if dtype.is_integer() and column.endswith("_id"):
            return "categorical"
        values = df[column].drop_nulls()
        if dtype.is_float():
            values = values.drop_nans()
        return "categorical" if values.n_unique() <= cfg.max_categories else "numeric"
    if dtype.is_temporal():
        return "numeric"
    return None


def _field_tokens(df: pl.DataFrame, column: str, kind: str, n_buckets: int) -> pl.DataFrame:
    """Rows (item i32, token str) of one field; nulls give none."""
    col = pl.col(column)
    if kind == "list":
        out = df.select("item", col.alias("value")).explode("value")
        out = out.with_columns(pl.col("value").cast(pl.String))
    elif kind == "text":
        out = df.select("item", col.cast(pl.String).str.to_lowercase().str.extract_all(r"\w+").alias("value"))
        out = out.explode("value")
    elif kind == "categorical":
        out = df.select("item", col.cast(pl.String).alias("value"))
    else:
        values = df[column].cast(pl.Float64) if not df.schema[column].is_temporal() else df[column].to_physical()
        values = values.cast(pl.Float64).fill_nan(None).to_numpy()
        ok = np.isfinite(values)
        bucket = np.full(len(values), -1, dtype=np.int64)
        if ok.any():
            inner = np.linspace(0.0, 1.0, n_buckets + 1)[1:-1]
            edges = np.unique(np.quantile(values[ok], inner))
            bucket[ok] = np.searchsorted(edges, values[ok], side="right")
        out = pl.DataFrame({"item": df["item"], "value": bucket}).filter(pl.col("value") >= 0)
        out = out.with_columns(pl.col("value").cast(pl.String))
    sep = "#" if kind == "numeric" else "="
    return out.drop_nulls("value").select(
        pl.col("item").cast(pl.Int32), (pl.lit(column + sep) + pl.col("value")).alias("token")
    )


def check_items(items: pl.DataFrame, where: str = "items.parquet") -> pl.DataFrame:
    """``items`` sorted by ``item``; the ids must be exactly 0..I-1 (ARCHITECTURE.md conventions)."""
    if "item" not in items.columns:
        raise OnerecError(f"{where}: missing column 'item' (has {items.columns[:12]})")
    items = items.sort("item")
    ids = items["item"].to_numpy()
    bad = int((ids != np.arange(len(ids))).sum()) if len(ids) else 0
    if bad or items["item"].null_count():
        raise OnerecError(f"{where}: column 'item' must hold exactly 0..{len(ids) - 1}; {bad} rows do not")
    return items


def build_features(items: pl.DataFrame, cfg: EmbedConfig) -> ItemFeatures:
    """Sparse, IDF-weighted, field-normalised bags of tokens for every item of ``items`` (row i = item i)."""
    items = check_items(items)
    n_items = items.height
    skip = {"item", "item_orig", *cfg.exclude_columns}
    kinds = {c: _field_kind(items, c, cfg) for c in items.columns if c not in skip}
    unused = sorted(c for c, k in kinds.items() if k is None)
    kinds = {c: k for c, k in kinds.items() if k is not None}
    parts = [_field_tokens(items, c, k, cfg.n_buckets).with_columns(field=pl.lit(c)) for c, k in kinds.items()]
    if cfg.item_id_feature:
        parts.append(items.select(pl.col("item").cast(pl.Int32), token=pl.lit("item=") + pl.col("item").cast(pl.String),
                                  field=pl.lit(ID_FIELD)))
    empty = pl.DataFrame(schema={"item": pl.Int32, "token": pl.String, "field": pl.String})
    long = pl.concat([p.select("item", "token", "field") for p in parts]) if parts else empty
    long = long.unique(["item", "token"])

    df = long.group_by("token").agg(pl.len().alias("df"), pl.first("field").alias("field"))
    df = df.filter((pl.col("df") >= cfg.min_count) | (pl.col("field") == ID_FIELD))
    df = df.sort(["df", "token"], descending=[True, False]).head(cfg.max_vocab).sort("token")
    df = df.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("token_id"),
        (1.0 + ((1.0 + n_items) / (1.0 + pl.col("df").cast(pl.Float64))).log()).alias("idf"),
    )

    n_numeric = sum(k == "numeric" for k in kinds.values())
    weight_of = {c: (1.0 / math.sqrt(n_numeric) if k == "numeric" else 1.0) for c, k in kinds.items()}
    weight_of[ID_FIELD] = 1.0
    weight_of.update({c: float(w) for c, w in cfg.field_weights.items()})
    weights_frame = pl.DataFrame({"field": list(weight_of), "field_weight": list(weight_of.values())},
                                 schema={"field": pl.String, "field_weight": pl.Float64})

    kept = long.join(df.select("token", "token_id", "idf"), on="token", how="inner")
    kept = kept.join(weights_frame, on="field", how="left").with_columns(
        (pl.col("idf") / (pl.col("idf") ** 2).sum().over(["item", "field"]).sqrt() * pl.col("field_weight"))
        .alias("weight")
    ).filter(pl.col("weight") > 0).sort(["item", "token_id"])

    counts = np.bincount(kept["item"].to_numpy(), minlength=n_items)
    offsets = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    per_field = kept.group_by("field").agg(pl.col("token_id").n_unique().alias("tokens"),
                                           pl.col("item").n_unique().alias("items"))
    stats = {r["field"]: r for r in per_field.iter_rows(named=True)}
    fields: dict[str, dict[str, Any]] = {}
    for column, kind in list(kinds.items()) + ([(ID_FIELD, "id")] if cfg.item_id_feature else []):
        row = stats.get(column, {})
        fields[column] = {"kind": kind, "weight": round(weight_of[column], 4),
                          "tokens": int(row.get("tokens", 0)), "items": int(row.get("items", 0))}
    for column in unused:
        fields[column] = {"kind": "unused (dtype)", "weight": 0.0, "tokens": 0, "items": 0}
    return ItemFeatures(
        offsets=offsets,
        tokens=kept["token_id"].to_numpy().astype(np.int64),
        weights=kept["weight"].to_numpy().astype(np.float32),
        vocab=df["token"].to_list(),
        fields=fields,
    )
