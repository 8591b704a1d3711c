"""The serving engine: item ids in, a generated session out. It knows nothing of HTTP.

Design choices
- A :class:`Snapshot` is everything one model version needs to answer (model, trie, item codes, a
  popularity fallback, its version string). It is immutable; the engine holds one reference and a hot
  reload swaps that reference atomically. A batch takes the reference once at its start, so requests in
  flight finish on the model they started with.
- :meth:`Engine.answer` is synchronous and batched: requests sharing ``(n_items, beam_size)`` are padded
  into one batched, trie-constrained beam search. :class:`MicroBatcher` (asyncio) groups concurrent
  requests (up to ``max_batch_size``, waiting at most ``max_wait_ms``) and runs batches one at a time on
  a single worker thread, so the model never runs twice concurrently and new requests queue into the
  next batch while one is running.
- An empty (or all-unknown) history gets the popularity fallback: the most frequent training targets,
  minus excluded items (``fallback: true`` in the answer). Beam search needs a history to attend to.
- ``scores`` are the per-item log-probabilities of the chosen session under the model (sum over the item's
  code tokens, each given the history and every earlier token), from one extra teacher-forced forward.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from onerec.config import ConfigError
from onerec.io import OnerecError


@dataclasses.dataclass
class ServeConfig:
    """``[serve]``: the HTTP service, its limits and its micro-batching."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32  # requests per batched beam search (1 = no micro-batching)
    max_wait_ms: float = 4.0  # how long a batch waits for company once its first request arrives
    default_n_items: int = 10
    max_n_items: int = 50
    default_beam_size: int = 16
    max_beam_size: int = 128
    max_history: int = 0  # 0 = the model's own window; longer histories keep their most recent items
    max_exclude: int = 1000
    exclude_history: bool = False  # default of a request's ``exclude_history`` (never re-recommend its history)
    max_body_bytes: int = 262_144
    reload_poll_s: float = 2.0  # how often to look for a new checkpoint in the run directory; 0 = never
    threads: int = 0  # torch intra-op threads for generation; 0 = leave torch's default (all cores)
    # models with the copy head: the validation-chosen gate bias (None = the run's: run.json decoding, else 0)
    copy_gate_bias: float | None = None
    # models with the item head: the validation-chosen weight (None = the run's: run.json decoding, else the model's)
    item_head_weight: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "default_n_items", "max_n_items", "default_beam_size", "max_beam_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.default_n_items <= self.max_n_items:
            raise ConfigError("serve.default_n_items must lie in 1..serve.max_n_items")
        if not 1 <= self.default_beam_size <= self.max_beam_size:
            raise ConfigError("serve.default_beam_size must lie in 1..serve.max_beam_size")
        if self.max_wait_ms < 0 or self.reload_poll_s < 0 or self.max_history < 0 or self.threads < 0:
            raise ConfigError("serve.max_wait_ms, reload_poll_s, max_history and threads must be >= 0")
        if self.copy_gate_bias is not None and not math.isfinite(self.copy_gate_bias):
            raise ConfigError(f"serve.copy_gate_bias must be finite, got {self.copy_gate_bias}")
        if self.item_head_weight is not None and not (math.isfinite(self.item_head_weight)
                                                      and self.item_head_weight >= 0):
            raise ConfigError(f"serve.item_head_weight must be finite and >= 0, got {self.item_head_weight}")


@dataclasses.dataclass(frozen=True)
class Query:
    """One request in the model's id space."""

    history: np.ndarray  # (n,) int64 item ids, oldest first, unknown ids already removed
    n_items: int
    beam_size: int
    exclude: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


@dataclasses.dataclass(frozen=True)
class Answer:
    items: list[int]
    semantic_ids: list[list[int]]
    scores: list[float]
    model_version: str
    fallback: bool
    history_used: int
    catalog: np.ndarray  # (I,) original item ids of the snapshot that answered


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One loaded model version; never mutated after construction."""

    model: Any  # onerec.model.onerec.OneRec in eval mode
    trie: Any  # onerec.tokenizer.trie.CodeTrie
    codes: np.ndarray  # (I, D) semantic ids per item
    popular: np.ndarray  # (I,) item ids, most popular first
    item_orig: np.ndarray  # (I,) original ids as strings
    version: str
    window: int  # longest history the model reads
    max_session_items: int  # longest session the model can write (decoder positions)

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])


def checkpoint_fingerprint(run_dir: Path) -> str:
    """A cheap identity of the checkpoint (size + mtime of the weights and of run.json), to notice a new one."""
    parts = []
    for name in ("model.safetensors", "run.json"):
        try:
            st = (Path(run_dir) / name).stat()
        except FileNotFoundError:
            return ""
        parts.append(f"{st.st_size}-{st.st_mtime_ns}")
    return "/".join(parts)


def _version_of(run_dir: Path) -> str:
    digest = hashlib.sha256()
    with (Path(run_dir) / "model.safetensors").open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def load_snapshot(run_dir: str | Path, copy_gate_bias: float | None = None,
                  item_head_weight: float | None = None) -> Snapshot:
    """Load a run directory for serving; any problem is an OnerecError (the caller keeps its old model).
    ``copy_gate_bias`` (``serve.copy_gate_bias``) is set on a model with the copy head and refused without one;
    ``item_head_weight`` (``serve.item_head_weight``) likewise needs the item head; ``None`` keeps the run's own
    (``run.json``'s ``decoding`` table from ``onerec tune --apply``, else the model's)."""
    import polars as pl
    import torch

    from onerec.checkpoint import load_run

    run_dir = Path(run_dir)
    try:
        model, info = load_run(run_dir)
    except OnerecError:
        raise
    except Exception as err:  # a broken file must not take the server down
        raise OnerecError(f"cannot load checkpoint in {run_dir}: {type(err).__name__}: {err}") from None
    model.eval()
    if copy_gate_bias is not None:
        model.set_copy_gate_bias(copy_gate_bias)
    if item_head_weight is not None:
        model.set_item_head_weight(item_head_weight)
    codes = model.item_codes.detach().cpu().numpy().astype(np.int64)  # (I, D)
    from onerec.tokenizer.trie import CodeTrie

    trie = CodeTrie.from_codes(codes, list(model.level_sizes))
    items_path = run_dir / "items.parquet"
    if not items_path.is_file() and info.get("data"):
        items_path = Path(info["data"]) / "items.parquet"
    if items_path.is_file():
        items = pl.read_parquet(items_path, columns=["item", "item_orig"]).sort("item")
        item_orig = items["item_orig"].cast(pl.Utf8).to_numpy()
    else:
        item_orig = np.arange(codes.shape[0]).astype(str)
    if item_orig.shape[0] != codes.shape[0]:
        raise OnerecError(f"{items_path}: {item_orig.shape[0]} items but the model has {codes.shape[0]}")
    popular = _popular_items(Path(info["data"]) if info.get("data") else None, codes.shape[0])
    # a smoke generation: a checkpoint that loads but cannot generate is refused here
    with torch.no_grad():
        from onerec.model.generate import generate_sessions

        probe = generate_sessions(model, trie, torch.tensor([[int(popular[0])]]), n_items=1, beam_size=1)
        if not torch.isfinite(probe.logp).all():
            raise OnerecError(f"{run_dir}: the checkpoint produces non-finite scores; refused")
    return Snapshot(
        model=model,
        trie=trie,
        codes=codes,
        popular=popular,
        item_orig=item_orig,
        version=str(info.get("version") or _version_of(run_dir)),
        window=int(model.config.max_history),
        max_session_items=int(model.config.max_session_items),
    )


def _popular_items(data_dir: Path | None, n_items: int) -> np.ndarray:
    """Items by how often they are a training target (ties: smaller id first); id order without data."""
    import polars as pl

    counts = np.zeros(n_items, dtype=np.int64)
    samples = data_dir / "samples.parquet" if data_dir is not None else None
    if samples is not None and samples.is_file():
        targets = (pl.scan_parquet(samples).filter(pl.col("split") == "train").select(pl.col("target").explode())
                   .collect()["target"].drop_nulls().to_numpy())
        targets = targets[(targets >= 0) & (targets < n_items)]
        counts = np.bincount(targets, minlength=n_items)
    return np.lexsort((np.arange(n_items), -counts)).astype(np.int64)


class Engine:
    """Answers batches of queries with the current snapshot; reloads a new one without stopping."""

    def __init__(self, loader: Callable[[], Snapshot], config: ServeConfig) -> None:
        self.config = config
        self._loader = loader
        self._snapshot: Snapshot | None = None
        self._reload_lock = threading.Lock()
        self.last_reload_error: str | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def reload(self) -> str:
        """Load a new snapshot and swap it in; on failure keep the old one and raise OnerecError."""
        with self._reload_lock:
            try:
                fresh = self._loader()
            except OnerecError as err:
                self.last_reload_error = str(err)
                raise
            self._snapshot = fresh  # one reference assignment: atomic for readers
            self.last_reload_error = None
            return fresh.version

    def answer(self, queries: list[Query]) -> list[Answer]:
        """Answer queries in as few batched beam searches as possible (one per (n_items, beam_size))."""
        snap = self._snapshot
        if snap is None:
            raise OnerecError("no model loaded yet")
        if self.config.threads > 0:
            import torch

            torch.set_num_threads(self.config.threads)
        answers: list[Answer | None] = [None] * len(queries)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, q in enumerate(queries):
            if q.history.size == 0:
                answers[i] = self._fallback(snap, q)
            else:
                groups.setdefault((q.n_items, q.beam_size), []).append(i)
        for (n_items, beam), idx in groups.items():
            for i, ans in zip(idx, self._generate(snap, [queries[j] for j in idx], n_items, beam)):
                answers[i] = ans
        return [a for a in answers if a is not None]

    def _window(self, snap: Snapshot) -> int:
        return min(self.config.max_history or snap.window, snap.window)

    def _generate(self, snap: Snapshot, queries: list[Query], n_items: int, beam: int) -> list[Answer]:
        import torch

        from onerec.model.generate import generate_sessions

        window = self._window(snap)
        hist = [q.history[-window:] for q in queries]
        width = max(len(h) for h in hist)
        history = torch.full((len(queries), width), -1, dtype=torch.long)
        for row, h in enumerate(hist):
            history[row, width - len(h):] = torch.from_numpy(h)  # left padding: the newest item is last
        width_ex = max(1, max(q.exclude.size for q in queries))
        exclude = torch.full((len(queries), width_ex), -1, dtype=torch.long)  # (B, e), -1 = padding
        for row, q in enumerate(queries):
            exclude[row, : q.exclude.size] = torch.from_numpy(q.exclude)
        with torch.no_grad():
            beams = generate_sessions(snap.model, snap.trie, history, n_items=n_items, beam_size=beam,
                                      exclude=exclude)
            best = beams.items[:, 0]  # (B, m) the best session per request
            # per-item score: the model's log-prob of the item's code tokens given everything before it
            item_logp = snap.model.token_logps(snap.model(history, best), best).sum(-1)  # (B, m)
        items = best.cpu().numpy()
        item_logp = item_logp.cpu().numpy()
        out = []
        for row, q in enumerate(queries):
            chosen = [int(v) for v in items[row]]
            scores = [round(float(v), 5) for v in item_logp[row]]
            out.append(Answer(
                items=chosen,
                semantic_ids=[[int(c) for c in snap.codes[v]] for v in chosen],
                scores=scores,
                model_version=snap.version,
                fallback=False,
                history_used=len(hist[row]),
                catalog=snap.item_orig,
            ))
        return out

    def _fallback(self, snap: Snapshot, q: Query) -> Answer:
        keep = snap.popular[~np.isin(snap.popular, q.exclude)][: q.n_items]
        return Answer(
            items=[int(v) for v in keep],
            semantic_ids=[[int(c) for c in snap.codes[v]] for v in keep],
            scores=[0.0] * len(keep),
            model_version=snap.version,
            fallback=True,
            history_used=0,
            catalog=snap.item_orig,
        )


class MicroBatcher:
    """Groups concurrent queries into batches for :meth:`Engine.answer`; one batch runs at a time."""

    def __init__(self, engine: Engine, max_batch_size: int, max_wait_ms: float,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Query, asyncio.Future[Answer]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onerec-generate")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, query: Query) -> Answer:
        assert self._queue is not None, "MicroBatcher.start() was not called"
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        await self._queue.put((query, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            start = time.perf_counter()
            try:
                answers = await loop.run_in_executor(self._executor, self.engine.answer, [q for q, _ in batch])
            except Exception as err:  # hand the error to every waiting request; keep serving
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for (_, fut), ans in zip(batch, answers):
                if not fut.done():
                    fut.set_result(ans)
