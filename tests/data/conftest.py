"""Fixtures of the data-stage tests: a small generated KuaiRand-layout folder and the real data prepared once."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.data import DataConfig
from onerec.data.fixture import write_kuairand_fixture
from onerec.data.prepare import prepare


@pytest.fixture(scope="session")
def kr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated KuaiRand-layout folder (official file names, no request ids)."""
    return write_kuairand_fixture(tmp_path_factory.mktemp("kr") / "in", seed=1)


@pytest.fixture(scope="session")
def real_kuairand(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The real KuaiRand-Pure folder prepared with configs/kuairand.toml defaults: (data dir, summary)."""
    from onerec.config import load_section

    repo = Path(__file__).resolve().parents[2]
    cfg = load_section(DataConfig, "data", repo / "configs" / "kuairand.toml")
    out = tmp_path_factory.mktemp("krreal") / "data"
    summary = prepare(cfg, datasets_dir / "kuairand_pure", out)
    return out, summary
