"""The simulator: a KuaiRand-format world with known ground truth, and the judge built from it.

``onerec simulate --out WORLD`` writes the logs and feature tables in the official KuaiRand-Pure layout
plus ``world.json`` / ``world.safetensors``; ``World.load(WORLD).expected_reward(users, items, day)`` is the
judge. Modules: ``config`` (SimulateConfig), ``features`` (item / user tables), ``world`` (latent state,
affinity), ``responses`` (ground truth), ``policy`` (logging policy), ``judge`` (expectations), ``writer``
(files), ``cli``. ``World`` and ``generate`` are imported lazily so ``onerec --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from onerec.simulate.config import SimulateConfig

__all__ = ["SimulateConfig", "World", "generate"]


def __getattr__(name: str) -> Any:
    if name == "World":
        from onerec.simulate.world import World

        return World
    if name == "generate":
        from onerec.simulate.writer import generate

        return generate
    raise AttributeError(f"module 'onerec.simulate' has no attribute {name!r}")
