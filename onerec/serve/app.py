"""The HTTP shell over :class:`onerec.serve.engine.Engine` (FastAPI).

Design choices
- Original item ids (strings or ints, as the source wrote them) come in and go out; the app maps them to
  model ids and back. Unknown history ids are dropped and listed in ``ignored``; unknown ``exclude`` ids
  are ignored silently (they cannot be recommended anyway).
- Every bad input is a 4xx with a one-line ``detail``: 413 for an oversized body, 422 for malformed JSON,
  wrong types or out-of-range values, 403 for ``/admin/reload`` from a non-loopback client, 503 while no
  model is loaded. Never a 5xx for bad input.
- ``/metrics`` is Prometheus text from ``prometheus_client`` on a registry owned by this app (so two apps
  in one process do not share counters).
- The model is loaded in the background at start-up (``/healthz`` answers at once, ``/readyz`` once loaded);
  a watcher polls the run directory and hot-reloads a new checkpoint; a broken one is refused (logged,
  counted) and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from onerec.io import OnerecError
from onerec.serve.engine import Engine, MicroBatcher, Query, ServeConfig, Snapshot, checkpoint_fingerprint, load_snapshot

log = logging.getLogger("onerec.serve")
LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: StrictStr | StrictInt | None = None
    history: list[StrictStr | StrictInt] = Field(default_factory=list)
    n_items: StrictInt | None = None
    beam_size: StrictInt | None = None
    exclude: list[StrictStr | StrictInt] = Field(default_factory=list)
    # also never recommend the (known) history items; None = serve.exclude_history
    exclude_history: StrictBool | None = None


class RecommendResponse(BaseModel):
    items: list[str]
    semantic_ids: list[list[int]]
    scores: list[float]
    model_version: str
    ignored: list[str]
    fallback: bool
    history_truncated: bool
    history_used: int


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("onerec_requests", "Recommend requests by outcome", ["outcome"], registry=self.registry)
        self.latency = Histogram("onerec_request_latency_seconds", "Recommend latency", registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("onerec_batch_size", "Requests per batched beam search", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_seconds = Histogram("onerec_batch_seconds", "Seconds per batched beam search", registry=self.registry)
        self.reloads = Counter("onerec_reloads", "Checkpoint reloads by outcome", ["outcome"], registry=self.registry)


def create_app(run_dir: str | Path, config: ServeConfig | None = None) -> FastAPI:
    """Build the app for ``run_dir``; the model loads when the app starts."""
    run_dir = Path(run_dir)
    config = config or ServeConfig()
    engine = Engine(lambda: load_snapshot(run_dir, config.copy_gate_bias, config.item_head_weight), config)
    metrics = _Metrics()
    batcher = MicroBatcher(engine, config.max_batch_size, config.max_wait_ms,
                           on_batch=lambda n, s: (metrics.batch_size.observe(n), metrics.batch_seconds.observe(s)))
    state: dict[str, Any] = {"fingerprint": "", "index": {}, "index_version": None}

    def id_index(snap: Snapshot) -> dict[str, int]:
        if state["index_version"] != snap.version:
            state["index"] = {str(orig): i for i, orig in enumerate(snap.item_orig)}
            state["index_version"] = snap.version
        return state["index"]

    async def reload_now() -> str:
        fingerprint = checkpoint_fingerprint(run_dir)
        try:
            version = await asyncio.get_running_loop().run_in_executor(None, engine.reload)
        except OnerecError as err:
            metrics.reloads.labels("refused").inc()
            state["fingerprint"] = fingerprint  # do not retry the same broken file in a loop
            log.error("reload refused, keeping the current model: %s", err)
            raise
        state["fingerprint"] = fingerprint
        metrics.reloads.labels("ok").inc()
        log.info("serving model version %s", version)
        return version

    async def watch() -> None:
        with contextlib.suppress(OnerecError):
            await reload_now()
        while config.reload_poll_s > 0:
            await asyncio.sleep(config.reload_poll_s)
            fingerprint = checkpoint_fingerprint(run_dir)
            if fingerprint and fingerprint != state["fingerprint"]:
                await asyncio.sleep(0.2)  # let a writer finish its rename
                with contextlib.suppress(OnerecError):
                    await reload_now()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        watcher = asyncio.get_running_loop().create_task(watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await batcher.stop()

    app = FastAPI(title="onerec", version="1", lifespan=lifespan,
                  description="Generates a session of items for a user's history (OneRec).")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return JSONResponse({"detail": f"request body over {config.max_body_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        snap = engine.snapshot
        if snap is None:
            return JSONResponse({"ready": False, "error": engine.last_reload_error}, status_code=503)
        return JSONResponse({"ready": True, "model_version": snap.version, "items": snap.n_items})

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> dict[str, str]:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK:
            raise HTTPException(403, "reload is allowed from loopback only")
        try:
            return {"model_version": await reload_now()}
        except OnerecError as err:
            raise HTTPException(409, f"checkpoint refused, still serving the old model: {err}") from None

    @app.post("/v1/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        start = time.perf_counter()
        snap = engine.snapshot
        if snap is None:
            metrics.requests.labels("unavailable").inc()
            raise HTTPException(503, "model not loaded yet")
        n_items = config.default_n_items if body.n_items is None else body.n_items
        beam = config.default_beam_size if body.beam_size is None else body.beam_size
        limit_items = min(config.max_n_items, snap.max_session_items, snap.n_items)
        problem = None
        if not 1 <= n_items <= limit_items:
            problem = f"n_items: must lie in 1..{limit_items}, got {n_items}"
        elif not 1 <= beam <= config.max_beam_size:
            problem = f"beam_size: must lie in 1..{config.max_beam_size}, got {beam}"
        elif len(body.exclude) > config.max_exclude:
            problem = f"exclude: at most {config.max_exclude} ids, got {len(body.exclude)}"
        elif snap.n_items - len(set(map(str, body.exclude))) < n_items:
            problem = f"exclude: leaves fewer than n_items={n_items} items to recommend"
        if problem:
            metrics.requests.labels("bad_request").inc()
            raise HTTPException(422, problem)
        index = id_index(snap)
        known = [index.get(str(v)) for v in body.history]
        ignored = [str(v) for v, k in zip(body.history, known) if k is None]
        history = np.asarray([k for k in known if k is not None], dtype=np.int64)
        window = min(config.max_history or snap.window, snap.window)
        truncated = history.size > window
        exclude = np.asarray([index[str(v)] for v in body.exclude if str(v) in index], dtype=np.int64)
        drop_history = config.exclude_history if body.exclude_history is None else body.exclude_history
        if drop_history and history.size:
            both = np.union1d(exclude, history)
            if snap.n_items - both.size < n_items:
                metrics.requests.labels("bad_request").inc()
                raise HTTPException(422, f"exclude_history: history and exclude leave fewer than n_items={n_items} "
                                         "items to recommend")
            exclude = both
        try:
            answer = await batcher.submit(Query(history=history[-window:], n_items=n_items, beam_size=beam,
                                                exclude=exclude))
        except OnerecError as err:
            metrics.requests.labels("error").inc()
            raise HTTPException(503, str(err)) from None
        except Exception:
            metrics.requests.labels("error").inc()
            raise
        metrics.requests.labels("ok").inc()
        metrics.latency.observe(time.perf_counter() - start)
        return RecommendResponse(
            items=[str(answer.catalog[i]) for i in answer.items],
            semantic_ids=answer.semantic_ids,
            scores=answer.scores,
            model_version=answer.model_version,
            ignored=ignored,
            fallback=answer.fallback,
            history_truncated=bool(truncated),
            history_used=answer.history_used,
        )

    return app


def serve(run_dir: str | Path, config: ServeConfig) -> None:
    """Run the server in this process until interrupted."""
    import uvicorn

    if not (Path(run_dir) / "model.safetensors").is_file():
        raise OnerecError(f"no model.safetensors in run directory {run_dir}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(run_dir, config), host=config.host, port=config.port, log_level="warning",
                limit_concurrency=4096)
