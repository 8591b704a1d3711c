"""The serving engine: valid distinct items, batching equals one-by-one, hot reload keeps the old model on failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from onerec.config import ConfigError
from onerec.io import OnerecError
from onerec.serve.engine import Engine, MicroBatcher, Query, ServeConfig, load_snapshot
from tests.serve.conftest import N_ITEMS, write_run


def _query(history: list[int], n: int = 5, beam: int = 4, exclude: list[int] = ()) -> Query:
    return Query(np.asarray(history, np.int64), n, beam, np.asarray(exclude, np.int64))


def test_answers_are_valid_distinct_and_respect_exclude(tiny_run: Path) -> None:
    """Every answer holds n distinct catalogue items, none excluded, with the item's own semantic ids."""
    engine = Engine(lambda: load_snapshot(tiny_run), ServeConfig())
    engine.reload()
    snap = engine.snapshot
    queries = [_query([1, 2, 3], n=8, exclude=[4, 5, 6]), _query([7], n=3, beam=2), _query([], n=6, exclude=[0])]
    answers = engine.answer(queries)
    for q, a in zip(queries, answers):
        assert len(a.items) == q.n_items and len(set(a.items)) == q.n_items, a.items
        assert all(0 <= i < N_ITEMS for i in a.items), a.items
        assert not set(a.items) & set(q.exclude.tolist()), (a.items, q.exclude)
        assert a.semantic_ids == [snap.codes[i].tolist() for i in a.items]
    assert answers[2].fallback and not answers[0].fallback, "an empty history must use the fallback"


def test_batched_answers_equal_single_answers(tiny_run: Path) -> None:
    """Answering queries together gives the same sessions as answering each alone."""
    engine = Engine(lambda: load_snapshot(tiny_run), ServeConfig())
    engine.reload()
    queries = [_query([1, 2, 3]), _query([9, 8]), _query([30, 31, 32, 33, 34])]
    together = engine.answer(queries)
    alone = [engine.answer([q])[0] for q in queries]
    assert [a.items for a in together] == [a.items for a in alone]


def test_microbatcher_groups_concurrent_requests(tiny_run: Path) -> None:
    """Concurrent submissions are answered in fewer batches than requests."""
    engine = Engine(lambda: load_snapshot(tiny_run), ServeConfig())
    engine.reload()
    sizes: list[int] = []

    async def main() -> list:
        batcher = MicroBatcher(engine, max_batch_size=16, max_wait_ms=50, on_batch=lambda n, s: sizes.append(n))
        batcher.start()
        answers = await asyncio.gather(*[batcher.submit(_query([i, i + 1])) for i in range(12)])
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert len(answers) == 12 and sum(sizes) == 12
    assert max(sizes) > 1, f"no batching happened: {sizes}"


def test_copy_gate_bias_and_item_head_weight_are_refused_without_their_head(tiny_run: Path) -> None:
    """serve.copy_gate_bias (item_head_weight) on a run without the copy (item) head fails the load with a one-line
    OnerecError; non-finite or negative values are config errors."""
    with pytest.raises(OnerecError, match="no copy head"):
        load_snapshot(tiny_run, copy_gate_bias=-1.0)
    with pytest.raises(ConfigError, match="copy_gate_bias"):
        ServeConfig(copy_gate_bias=float("inf"))
    with pytest.raises(OnerecError, match="no item head"):
        load_snapshot(tiny_run, item_head_weight=2.0)
    with pytest.raises(ConfigError, match="item_head_weight"):
        ServeConfig(item_head_weight=-1.0)


def test_broken_checkpoint_is_refused_and_old_model_kept(tiny_run: Path) -> None:
    """A corrupt model file fails the reload with OnerecError; the previous version keeps answering."""
    engine = Engine(lambda: load_snapshot(tiny_run), ServeConfig())
    old = engine.reload()
    (tiny_run / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(OnerecError):
        engine.reload()
    assert engine.snapshot is not None and engine.snapshot.version == old
    assert len(engine.answer([_query([1, 2])])[0].items) == 5
    write_run(tiny_run, seed=1)
    assert engine.reload() != old, "a new checkpoint must change model_version"


def test_served_model_decodes_with_the_runs_tuned_knob_unless_serve_names_it(tmp_path: Path) -> None:
    """run.json's decoding table (`onerec tune --apply`) is the served weight; serve.item_head_weight overrides it."""
    import json

    run = tmp_path / "run"
    write_run(run, seed=0, item_head=True)
    assert load_snapshot(run).model.item_head_weight == 1.0  # the model's own default
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(info | {"decoding": {"item_head_weight": 3.0}}))
    assert load_snapshot(run).model.item_head_weight == 3.0
    assert load_snapshot(run, item_head_weight=0.5).model.item_head_weight == 0.5
