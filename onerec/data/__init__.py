"""The data stage: canonical tables from real logs (see docs/ARCHITECTURE.md §1).

``onerec data prepare`` writes a data directory; later stages read it back with :func:`load`.
polars is imported inside functions so ``import onerec.data`` stays light.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onerec.data.config import DataConfig

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

TABLES = ("interactions", "items", "users", "sessions", "samples")


@dataclasses.dataclass
class DataBundle:
    """A prepared data directory in memory (polars frames and the summary dict)."""

    path: Path
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    sessions: pl.DataFrame
    samples: pl.DataFrame
    summary: dict[str, Any]
    interactions_random: pl.DataFrame | None = None

    @property
    def n_items(self) -> int:
        return self.items.height

    @property
    def n_users(self) -> int:
        return self.users.height


def load(path: str | Path) -> DataBundle:
    """Read the data directory written by ``onerec data prepare`` (OnerecError if a table is missing)."""
    import polars as pl

    from onerec.io import OnerecError, read_json

    path = Path(path)
    if not path.is_dir():
        raise OnerecError(f"data directory not found: {path}")
    frames = {}
    for name in TABLES:
        file = path / f"{name}.parquet"
        if not file.is_file():
            raise OnerecError(f"{path}: missing {file.name} (run `onerec data prepare`)")
        frames[name] = pl.read_parquet(file)
    rnd = path / "interactions_random.parquet"
    return DataBundle(
        path=path,
        summary=read_json(path / "summary.json"),
        interactions_random=pl.read_parquet(rnd) if rnd.is_file() else None,
        **frames,
    )


__all__ = ["DataBundle", "DataConfig", "load"]
