"""Adapters: one per source layout, each ``read(cfg, folder) -> RawData`` (see ``common.RawData``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from onerec.data.adapters.common import RawData
from onerec.data.config import DataConfig

SOURCES = ("kuairand", "amazon", "movielens", "csv")


def read_source(cfg: DataConfig, folder: Path) -> RawData:
    """Read ``folder`` with the adapter named by ``cfg.source``."""
    module = importlib.import_module(f"onerec.data.adapters.{cfg.source}")
    return module.read(cfg, Path(folder))


__all__ = ["RawData", "SOURCES", "read_source"]
