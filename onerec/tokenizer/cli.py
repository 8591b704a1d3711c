"""``onerec tokenize``: item embeddings -> semantic IDs, codebooks, trie and metrics in ``--out TOK``.

Design choices
- Input, exactly one of: ``--embeddings FILE`` (.npy loaded with ``allow_pickle=False``; Parquet with
  ``item_id`` plus either one list column or numeric vector columns; ``.safetensors`` with tensor
  ``embeddings``), ``--emb DIR`` (the embed stage's ``EMB/embeddings.safetensors``) or ``--data DIR``
  alone (a stand-in behaviour embedding, the SVD of the item co-occurrence matrix, see ``cooc``).
  With ``--data`` and a file, the file must hold one row per item of ``items.parquet``.
- ``tokenize_embeddings`` is the pure entry point (array + config -> codes, codebooks, metrics); the
  command only reads, validates, calls it and writes ``TOK`` atomically.
- ``--report`` also runs the two other methods on the same embeddings and draws their per-level code
  usage side by side (``report.png``, ``report_metrics.json``) so the hourglass is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer

from onerec.io import OnerecError
from onerec.tokenizer import TokenizerConfig

METHODS = ("balanced", "kmeans", "rqvae")


@dataclass
class Tokenized:
    level_codes: np.ndarray  # (N, L)
    tensors: dict[str, Any]  # name -> array, written to codebooks.safetensors
    metrics: dict[str, Any]
    seconds: float


# ------------------------------------------------------------------------------------------ input
def _ids_to_rows(ids: np.ndarray, n_items: int | None, path: Path) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise OnerecError(f"{path}: column item_id must hold integers, got {ids.dtype}")
    n = n_items if n_items is not None else int(ids.max()) + 1 if len(ids) else 0
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise OnerecError(f"{path}: item_id outside 0..{n - 1} ({int(((ids < 0) | (ids >= n)).sum())} rows)")
    if len(np.unique(ids)) != len(ids):
        raise OnerecError(f"{path}: {len(ids) - len(np.unique(ids))} duplicated item_id values")
    if len(ids) != n:
        raise OnerecError(f"{path}: {n - len(ids)} item ids missing from the embeddings (expected 0..{n - 1})")
    return ids.astype(np.int64)


def read_embeddings(path: Path, n_items: int | None = None) -> np.ndarray:
    """Read an embedding file (.npy, .parquet keyed by item_id, .safetensors) as (I, d) float32."""
    path = Path(path)
    if not path.is_file():
        raise OnerecError(f"embeddings file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise OnerecError(f"{path}: not a plain numeric .npy array ({err})") from None
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if "embeddings" not in tensors:
            raise OnerecError(f"{path}: no tensor named 'embeddings' (found {sorted(tensors)})")
        x = tensors["embeddings"]
    elif suffix == ".parquet":
        import polars as pl

        frame = pl.read_parquet(path)
        if "item_id" not in frame.columns:
            raise OnerecError(f"{path}: no item_id column (columns: {frame.columns})")
        rows = _ids_to_rows(frame["item_id"].to_numpy(), n_items, path)
        rest = [c for c in frame.columns if c != "item_id"]
        lists = [c for c in rest if isinstance(frame.schema[c], (pl.List, pl.Array))]
        if len(lists) == 1:
            values = frame[lists[0]]
            lengths = values.list.len().to_numpy() if isinstance(frame.schema[lists[0]], pl.List) else None
            if lengths is not None and len(lengths) and (lengths != lengths[0]).any():
                raise OnerecError(f"{path}: column {lists[0]} holds vectors of {len(np.unique(lengths))} lengths")
            vectors = np.asarray(values.to_list(), dtype=np.float64)
        elif not lists and rest and all(frame.schema[c].is_numeric() for c in rest):
            vectors = frame.select(rest).to_numpy().astype(np.float64)
        else:
            raise OnerecError(f"{path}: need item_id and one list column or only numeric columns, got {rest}")
        x = np.empty_like(vectors)
        x[rows] = vectors
    else:
        raise OnerecError(f"{path}: unsupported embeddings format {suffix!r} (use .npy, .parquet, .safetensors)")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise OnerecError(f"{path}: embeddings must be a 2-D (items, dim) array, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise OnerecError(f"{path}: embeddings must be numeric, got dtype {x.dtype}")
    if n_items is not None and x.shape[0] != n_items:
        raise OnerecError(f"{path}: {x.shape[0]} embedding rows for {n_items} items in items.parquet")
    return x.astype(np.float32)


def check_embeddings(x: np.ndarray, k: int, where: str) -> None:
    """Finite values and at least K items, else OnerecError."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise OnerecError(f"{where}: {int(bad.sum())} embedding rows hold NaN or inf (first: item {int(np.argmax(bad))})")
    if x.shape[0] < k:
        raise OnerecError(f"{where}: codebook size K={k} is larger than the number of items N={x.shape[0]}")


def data_embeddings(data: Path, seed: int, dim: int = 64) -> np.ndarray:
    """Stand-in embeddings from DATA/interactions.parquet positives (co-occurrence SVD)."""
    import polars as pl

    from onerec.tokenizer.cooc import cooccurrence_embeddings

    n_items = count_items(data)
    path = Path(data) / "interactions.parquet"
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    events = pl.read_parquet(path, columns=["user", "item", "ts_ms", "positive"])
    events = events.filter(pl.col("positive")).sort(["user", "ts_ms"])
    return cooccurrence_embeddings(events["user"].to_numpy(), events["item"].to_numpy(), n_items, dim, seed=seed)


def count_items(data: Path) -> int:
    import polars as pl

    path = Path(data) / "items.parquet"
    if not path.is_file():
        raise OnerecError(f"missing file: {path}")
    return pl.scan_parquet(path).select(pl.len()).collect().item()


# ------------------------------------------------------------------------------------------ core
def tokenize_embeddings(x: np.ndarray, cfg: TokenizerConfig) -> Tokenized:
    """Quantise ``x`` (N, d) with ``cfg.method``: level codes, tensors to save and metrics."""
    from onerec.tokenizer.balanced import fit_balanced_level, paper_balanced_kmeans
    from onerec.tokenizer.kmeans import residual_kmeans, residual_quantize
    from onerec.tokenizer.metrics import tokenizer_metrics

    check_embeddings(x, cfg.codebook_size, "embeddings")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if cfg.normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k, start = cfg.codebook_size, time.perf_counter()
    tensors: dict[str, Any] = {}
    space, extra = "embedding", {}
    if cfg.method == "balanced":
        if cfg.balanced_algorithm == "paper":
            fit = lambda r, level: paper_balanced_kmeans(r, k, cfg.seed + level, cfg.iters)  # noqa: E731
        else:
            fit = lambda r, level: fit_balanced_level(  # noqa: E731
                r, k, cfg.seed + level, cfg.iters, cfg.candidates, cfg.refine_rounds,
                cfg.train_points_per_centroid, cfg.price_rounds,
            )
        result = residual_quantize(x, cfg.levels, fit)
    elif cfg.method == "kmeans":
        result = residual_kmeans(x, cfg.levels, k, cfg.seed, cfg.iters)
    else:
        from onerec.tokenizer.rqvae import train_rqvae

        trained = train_rqvae(
            x, cfg.levels, k, cfg.seed, cfg.rqvae_latent_dim, cfg.rqvae_hidden_dims or cfg.rqvae_hidden,
            cfg.rqvae_epochs, cfg.rqvae_batch_size, cfg.rqvae_lr, cfg.rqvae_beta, cfg.rqvae_optimizer, cfg.rqvae_init,
        )
        result, space = trained.codes, "latent"
        extra = {"recon_mse": trained.recon_mse, "train_loss": trained.losses,
                 "codes_used_per_epoch": trained.codes_used}
        tensors.update({f"rqvae.{name}": p.detach().numpy() for name, p in trained.model.state_dict().items()})
    seconds = time.perf_counter() - start
    tensors["codebooks"] = result.codebooks
    metrics = tokenizer_metrics(result.codes, k, result.residual_mse, result.input_mse, space)
    metrics.update(method=cfg.method, seconds=seconds, **extra)
    return Tokenized(result.codes, tensors, metrics, seconds)


def write_tokenizer(out: Path, tok: Tokenized, cfg: TokenizerConfig, dim: int, source: str) -> None:
    """Write codes.parquet, codebooks.safetensors, trie.safetensors, tokenizer.json, tokenizer_metrics.json."""
    from safetensors.numpy import save_file

    from onerec.config import to_dict
    from onerec.io import atomic_dir, atomic_path, write_json
    from onerec.tokenizer.codec import SemanticIds
    from onerec.tokenizer.trie import CodeTrie

    ids = SemanticIds.from_levels(tok.level_codes, cfg.codebook_size)
    with atomic_dir(Path(out)) as tmp:
        ids.save(tmp, {"method": cfg.method, "dim": dim, "embeddings": source, "config": to_dict(cfg)})
        with atomic_path(tmp / "codebooks.safetensors") as path:
            save_file({k: np.ascontiguousarray(v) for k, v in tok.tensors.items()}, str(path))
        CodeTrie.from_codes(ids.codes, ids.level_sizes).save(tmp)
        write_json(tmp / "tokenizer_metrics.json", {**tok.metrics, "dedup_size": ids.level_sizes[-1]})


def draw_report(metrics: dict[str, dict[str, Any]], codes: dict[str, np.ndarray], k: int, path: Path) -> None:
    """PNG: one column per method, one row per level, sorted code-usage counts (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from onerec.io import atomic_path

    methods = list(codes)
    levels = next(iter(codes.values())).shape[1]
    fig, axes = plt.subplots(levels, len(methods), figsize=(4 * len(methods), 2.6 * levels), squeeze=False)
    for col, method in enumerate(methods):
        for level in range(levels):
            counts = np.sort(np.bincount(codes[method][:, level], minlength=k))[::-1]
            ax = axes[level, col]
            ax.bar(np.arange(k), counts, width=1.0, color="C%d" % col)
            stats = metrics[method]["levels"][level]
            ax.set_title(f"{method} level {level}: {stats['clusters_used']}/{k} used, "
                         f"H/logK={stats['entropy_ratio']:.2f}", fontsize=8)
            ax.set_xlabel("codes, most used first", fontsize=7)
            ax.set_ylabel("items", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ command
def tokenize(
    embeddings: Path = typer.Option(None, "--embeddings", help="Embedding file: .npy, .parquet (item_id + vector) or .safetensors"),
    emb: Path = typer.Option(None, "--emb", help="Embed stage output directory (EMB/embeddings.safetensors)"),
    data: Path = typer.Option(None, "--data", help="Data directory (item count; alone: co-occurrence SVD embeddings)"),
    method: str = typer.Option(None, "--method", help="balanced | kmeans | rqvae"),
    levels: int = typer.Option(None, "--levels", help="Residual levels L"),
    codebook_size: int = typer.Option(None, "--codebook-size", help="Codes per level K"),
    seed: int = typer.Option(None, "--seed", help="Random seed"),
    out: Path = typer.Option(..., "--out", help="Output tokenizer directory TOK"),
    config: Path = typer.Option(None, "--config", help="TOML config with a \\[tokenizer] table"),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. tokenizer.iters=5"),
    report: bool = typer.Option(False, "--report", help="Also run the other methods and draw report.png"),
) -> None:
    """Quantise item embeddings into semantic IDs (residual balanced K-means, k-means or RQ-VAE)."""
    import torch

    from onerec.config import load_section
    from onerec.io import write_json

    overrides = list(set_)
    for key, value in (("method", method), ("levels", levels), ("codebook_size", codebook_size), ("seed", seed)):
        if value is not None:
            overrides.append(f'tokenizer.{key}="{value}"' if isinstance(value, str) else f"tokenizer.{key}={value}")
    cfg = load_section(TokenizerConfig, "tokenizer", config, overrides)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    given = [name for name, v in (("--embeddings", embeddings), ("--emb", emb)) if v is not None]
    if len(given) > 1:
        raise OnerecError("give only one of --embeddings and --emb")
    n_items = count_items(data) if data is not None else None
    if embeddings is not None:
        x, source = read_embeddings(embeddings, n_items), str(embeddings)
    elif emb is not None:
        x, source = read_embeddings(Path(emb) / "embeddings.safetensors", n_items), str(emb)
    elif data is not None:
        x, source = data_embeddings(data, cfg.seed), f"cooccurrence-svd:{data}"
    else:
        raise OnerecError("give the embeddings: --embeddings FILE, --emb DIR or --data DIR")
    check_embeddings(x, cfg.codebook_size, source)
    tok = tokenize_embeddings(x, cfg)
    write_tokenizer(out, tok, cfg, x.shape[1], source)
    m = tok.metrics
    typer.echo(f"{cfg.method}: {x.shape[0]} items, L={cfg.levels}, K={cfg.codebook_size}, "
               f"{tok.seconds:.1f}s, collision rate {m['collision_rate']:.4f}")
    for lv in m["levels"]:
        typer.echo(f"  level {lv['level']}: used {lv['clusters_used']}/{cfg.codebook_size}, size "
                   f"{lv['min_size']}..{lv['max_size']}, H/logK {lv['entropy_ratio']:.3f}, "
                   f"residual MSE {lv['residual_mse']:.5g}")
    if report:
        from dataclasses import replace

        all_metrics, all_codes = {cfg.method: m}, {cfg.method: tok.level_codes}
        for other in METHODS:
            if other != cfg.method:
                res = tokenize_embeddings(x, replace(cfg, method=other))
                all_metrics[other], all_codes[other] = res.metrics, res.level_codes
        ordered = {name: all_codes[name] for name in METHODS}
        draw_report(all_metrics, ordered, cfg.codebook_size, Path(out) / "report.png")
        write_json(Path(out) / "report_metrics.json", all_metrics)
        typer.echo(f"report: {Path(out) / 'report.png'}")
