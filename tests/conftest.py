"""Shared fixtures. Real-data tests use ``datasets_dir`` and skip, with a reason, when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _datasets_path() -> Path | None:
    """$ONEREC_DATASETS, else ``../shared/datasets`` beside the checkout, else the workplace's /work/shared."""
    env = os.environ.get("ONEREC_DATASETS")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "datasets", Path("/work/shared/datasets")]
    return next((p for p in candidates if p.is_dir()), None)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The real datasets folder; skips the test, with the reason, when it is not there (a user's fresh clone)."""
    path = _datasets_path()
    if path is None:
        pytest.skip("real datasets not found: set ONEREC_DATASETS or place them at ../shared/datasets")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Test models are tiny: one intra-op thread is faster than two (no OpenMP hand-offs) and keeps a busy
    machine from thrashing (measured: a tiny beam search took 9 s with 2 threads on a loaded box, 0.2 s with 1)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline on configs/tiny_pipeline.toml (simulated world, toy sizes), run once per session."""
    from onerec.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("pipeline") / "run"
    run_pipeline(REPO / "configs" / "tiny_pipeline.toml", out, log=lambda _: None)
    return out
