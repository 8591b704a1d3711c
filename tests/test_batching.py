"""samples.parquet rows -> padded tensors, and which samples train the seed model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from onerec.batching import SampleTable, collate, history_sessions, seed_samples
from onerec.io import OnerecError


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "sample": [0, 1, 2, 3],
        "session": [10, 11, -1, 12],
        "split": ["train", "train", "train", "valid"],
        "history": [[1, 2, 3, 4, 5], [7], [], [8, 9]],
        "history_ts": [[1, 2, 3, 4, 5], [9], [], [3, 4]],
        "target": [[6, 7, 8, 9], [2], [3, 4], [1]],
    }, schema_overrides={"history": pl.List(pl.Int32), "target": pl.List(pl.Int32)})


def test_collate_keeps_recent_history_and_first_session_items() -> None:
    """History keeps the last max_history items left-aligned (-1 padded); sessions the first m items."""
    batch = collate(SampleTable.from_frame(_frame()), np.array([0, 1, 2]), max_history=3, session_len=3)
    want_h = torch.tensor([[3, 4, 5], [7, -1, -1], [-1, -1, -1]])
    want_s = torch.tensor([[6, 7, 8], [2, -1, -1], [3, 4, -1]])
    assert torch.equal(batch["history"], want_h), f"history {batch['history'].tolist()}"
    assert torch.equal(batch["sessions"], want_s), f"sessions {batch['sessions'].tolist()}"
    assert torch.equal(batch["history_ts"], torch.tensor([[3, 4, 5], [9, 0, 0], [0, 0, 0]])), "history_ts misaligned"


def test_collate_width_is_longest_history_in_batch() -> None:
    """A batch is only as wide as its longest history (capped by max_history), at least 1."""
    table = SampleTable.from_frame(_frame())
    assert collate(table, np.array([1, 3]), 50, 2)["history"].shape == (2, 2)
    assert collate(table, np.array([2]), 50, 2)["history"].shape == (1, 1)


def test_collate_session_width_is_longest_target_in_batch() -> None:
    """Sessions are only as wide as the longest target in the batch (capped by session_len), at least 1."""
    table = SampleTable.from_frame(_frame())
    lengths = table.target.lengths()
    for idx in ([0, 1, 2], [1], [1, 2]):
        want = max(1, min(10, int(lengths[idx].max())))
        assert collate(table, np.array(idx), 50, 10)["sessions"].shape == (len(idx), want)
    assert collate(table, np.array([0]), 50, 2)["sessions"].shape == (1, 2), "session_len must cap the width"


def test_seed_samples_keep_high_quality_sessions_and_windows() -> None:
    """Train samples are those of high-quality sessions plus windows (session -1), in sample order."""
    sessions = pl.DataFrame({"session": [10, 11, 12], "high_quality": [True, False, True]})
    kept = seed_samples(_frame(), sessions, "train")["sample"].to_list()
    assert kept == [0, 2], f"kept samples {kept}, want [0, 2]"
    every = seed_samples(_frame(), sessions, "train", rule="all")["sample"].to_list()
    assert every == [0, 1, 2], f"rule 'all' kept {every}, want every train sample with a target"
    with pytest.raises(OnerecError, match="seed-sample rule"):
        seed_samples(_frame(), sessions, "train", rule="best")


def test_item_wise_gives_every_session_item_its_own_sample_with_the_same_history() -> None:
    from onerec.batching import item_wise

    rows = item_wise(_frame())
    assert rows["target"].to_list() == [[6], [7], [8], [9], [2], [3], [4], [1]], rows["target"].to_list()
    assert rows["history"].to_list()[:4] == [[1, 2, 3, 4, 5]] * 4, "each target keeps the session's history"
    assert rows["sample"].to_list() == [0, 0, 0, 0, 1, 2, 2, 3] and rows.schema["target"] == pl.List(pl.Int32)


def test_positive_targets_keep_engaged_items_in_order() -> None:
    from onerec.batching import positive_targets

    rows = _frame().with_columns(pl.Series("target_positive", [[False, True, False, True], [False], [True, True],
                                                                [True]]))
    out = positive_targets(rows)
    assert out["target"].to_list() == [[7, 9], [], [3, 4], [1]] and "target_positive" not in out.columns
    assert seed_samples(out, None, "train", "all")["sample"].to_list() == [0, 2], "a session with no positive trains nothing"


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_history_sessions_cut_only_the_earliest_history_into_ordered_sessions(chunk) -> None:
    """Per user, only the earliest sample's history is cut: the targets concatenated give back that history
    from its second item on, each target follows its own history in the original order, no target is longer
    than the chunk, and the new sample ids continue after the largest one."""
    rows = pl.DataFrame({
        "sample": [0, 1, 2, 3],
        "user": [0, 0, 1, 2],
        "ts_ms": [50, 10, 20, 30],  # user 0's earliest sample is sample 1 (ts 10), not sample 0
        "history": [[1, 2, 3, 4, 5, 6, 9], [1, 2, 3, 4, 5, 6], [7], []],
        "history_ts": [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], [9], []],
        "target": [[8], [9], [2], [3]],
    }, schema_overrides={"history": pl.List(pl.Int32), "target": pl.List(pl.Int32)})
    extra = history_sessions(rows, chunk)
    assert extra["sample"].to_list() == list(range(4, 4 + len(extra))), "ids must continue after the largest"
    got = [t for ts in extra["target"].to_list() for t in ts]
    assert got == [2, 3, 4, 5, 6], f"targets {got}: only user 0's earliest history, second item on, in order"
    for h, hts, t in zip(*(extra[c].to_list() for c in ("history", "history_ts", "target"))):
        assert 1 <= len(t) <= chunk and len(h) >= 1, f"history {h} target {t}"
        assert h + t == [1, 2, 3, 4, 5, 6][: len(h) + len(t)], f"target {t} does not follow history {h}"
        assert hts == h, "history timestamps are sliced with the history"
    assert len(extra) == -(-5 // chunk), f"{len(extra)} sessions for 5 items in chunks of {chunk}"
    with pytest.raises(OnerecError, match="chunk"):
        history_sessions(rows, 0)
