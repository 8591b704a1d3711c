"""``onerec embed``: item embeddings from a data directory (or a user's file), written per ARCHITECTURE.md §3.

Design choices
- :func:`run_embed` is the whole stage as a plain function (the pipeline and the benchmark call it);
  :func:`embed_command` only parses options. torch is imported inside, so ``onerec --help`` stays fast.
- The output directory is written atomically (a temporary directory renamed into place).
- ``content`` embeddings are always computed (they cost one sparse product) so ``embed_metrics.json``
  compares popularity, content and the chosen method on the same held-out samples.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from onerec.embed import EmbedConfig


def _read(data: Path, name: str) -> Any:
    import polars as pl

    from onerec.io import OnerecError

    file = data / f"{name}.parquet"
    if not file.is_file():
        raise OnerecError(f"{data}: missing {file.name} (run `onerec data prepare`)")
    try:
        return pl.read_parquet(file)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise OnerecError(f"{file}: cannot read ({str(err).splitlines()[0]})") from None


def run_embed(
    data: str | Path,
    out: str | Path,
    cfg: EmbedConfig,
    embeddings_file: str | Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Build, write and check item embeddings; returns the ``embed_metrics.json`` dict."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from onerec import __version__
    from onerec.config import to_dict
    from onerec.embed.encoder import content_projection, train_aligned
    from onerec.embed.external import read_external
    from onerec.embed.features import build_features, check_items
    from onerec.embed.knn import evaluate
    from onerec.embed.pairs import co_engagement_pairs, item_popularity, train_positives
    from onerec.io import OnerecError, atomic_dir, write_json

    data, out = Path(data), Path(out)
    if embeddings_file is not None:
        cfg = dataclasses.replace(cfg, method="external")
    if cfg.method == "external" and embeddings_file is None:
        raise OnerecError("embed.method = 'external' needs --embeddings FILE (.npy or .parquet)")
    if not data.is_dir():
        raise OnerecError(f"data directory not found: {data}")
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    items = check_items(_read(data, "items"), str(data / "items.parquet"))
    interactions, samples = _read(data, "interactions"), _read(data, "samples")
    sessions = _read(data, "sessions") if (data / "sessions.parquet").is_file() else None
    positives, split_counts = train_positives(interactions, samples, sessions, cfg.include_histories)
    popularity = item_popularity(positives, items.height)

    features = build_features(items, cfg)
    info: dict[str, Any] = {"features": features.summary(), "train_positives": split_counts}
    tables: dict[str, np.ndarray] = {}
    if features.n_tokens:
        tables["content"] = content_projection(features, cfg.dim, cfg.seed)
    elif cfg.method != "external":
        raise OnerecError(f"{data / 'items.parquet'}: no usable item feature (set embed.item_id_feature = true)")
    log(f"embed: {items.height} items, {features.n_tokens} feature tokens, {split_counts['train_positives']} training positives")

    train_started = time.perf_counter()
    if cfg.method == "aligned":
        pairs = co_engagement_pairs(positives, cfg.window_items, cfg.window_ms, cfg.max_pairs, cfg.seed)
        if len(pairs) < 2:
            raise OnerecError(f"{data}: {len(pairs)} co-engagement pairs in the training split; need >= 2")
        log(f"embed: {len(pairs)} co-engagement pairs, {cfg.epochs} epochs")
        tables["aligned"], history = train_aligned(
            features, pairs, cfg, log=lambda e: log(f"embed: epoch {e['epoch']} loss {e['loss']:.4f} ({e['seconds']} s)")
        )
        info["training"] = {"pairs": int(len(pairs)), "epochs": history}
    elif cfg.method == "external":
        tables["external"], info["external"] = read_external(embeddings_file, items, cfg.external_dim)
    train_wall_s = round(time.perf_counter() - train_started, 2)
    embeddings = tables[cfg.method]

    metrics: dict[str, Any] = {"method": cfg.method, "train_wall_s": train_wall_s}
    if cfg.eval:
        eval_started = time.perf_counter()
        metrics.update(evaluate(tables, popularity, samples, cfg.eval_split, cfg.knn_last_k, cfg.eval_k))
        metrics["eval_wall_s"] = round(time.perf_counter() - eval_started, 2)
        metrics["protocol"] = (
            "kNN next-item: query = mean of the last knn_last_k history embeddings, cosine, full ranking over all "
            "items, history items not filtered; Recall@K = |topK ∩ P| / min(|P|, K), P = positive targets of "
            f"samples.parquet split '{cfg.eval_split}' (EVAL.md §1 leave-one-out / §2 next session)"
        )
        for name, values in metrics["methods"].items():
            log(f"embed: {cfg.eval_split} {name}: " + " ".join(f"{k} {v:.4f}" for k, v in values.items()))

    meta = {
        "method": cfg.method,
        "dim": int(embeddings.shape[1]),
        "n_items": int(embeddings.shape[0]),
        "config": to_dict(cfg),
        "data": str(data),
        "version": __version__,
        "train_wall_s": train_wall_s,
        "wall_s": round(time.perf_counter() - started, 2),
        **info,
    }
    with atomic_dir(out) as tmp:
        save_file({"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}, str(tmp / "embeddings.safetensors"))
        write_json(tmp / "embed.json", meta)
        write_json(tmp / "embed_metrics.json", metrics)
    log(f"embed: wrote {out} ({meta['n_items']} x {meta['dim']}, {cfg.method}) in {meta['wall_s']} s")
    return metrics


def embed_command(
    data: Annotated[Path, typer.Option("--data", help="Data directory from `onerec data prepare`.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (embeddings.safetensors, embed.json).")],
    config: Annotated[Path | None, typer.Option("--config", help="TOML file; its \\[embed] table is read.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. embed.method=content.")] = None,
    embeddings: Annotated[
        Path | None, typer.Option("--embeddings", help="Bring your own: .npy (I, d) or Parquet keyed by item id.")
    ] = None,
) -> None:
    """Item embeddings: content features aligned with co-engagement (or content-only, or your own file)."""
    from onerec.config import load_section

    cfg = load_section(EmbedConfig, "embed", config, list(set_ or []))
    run_embed(data, out, cfg, embeddings_file=embeddings, log=typer.echo)
