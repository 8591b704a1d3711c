"""The harnesses score an oracle perfectly, a blind recommender at zero, and never leak targets into training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.evaluate import protocols


def _sequences(n_users: int = 30, n_items: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, size=rng.integers(3, 30)) for _ in range(n_users)]


def test_leave_one_out_split_positions() -> None:
    """Train is i_1..i_{n-2}; valid predicts i_{n-1} from it; test predicts i_n from i_1..i_{n-1} (last n kept)."""
    seq = np.arange(10, 40)  # 30 distinct items
    loo = protocols.leave_one_out([seq], 50, max_history=5)
    assert loo.train_sequences[0].tolist() == list(range(10, 38)), "train must stop before the valid target"
    assert loo.valid.target.tolist() == [38] and loo.test.target.tolist() == [39], "targets"
    assert loo.valid.history[0].tolist() == [33, 34, 35, 36, 37], f"valid history {loo.valid.history[0]}"
    assert loo.test.history[0].tolist() == [34, 35, 36, 37, 38], f"test history {loo.test.history[0]}"


def test_no_eval_target_is_trained_on() -> None:
    """When valid/test targets are items unique to their position, none of them occurs in a training sequence."""
    rng = np.random.default_rng(1)
    seqs = []
    for u in range(20):  # items 0..99 are history items, 100+2u and 101+2u the user's own valid/test targets
        seqs.append(np.concatenate([rng.integers(0, 100, size=rng.integers(1, 12)), [100 + 2 * u, 101 + 2 * u]]))
    loo = protocols.leave_one_out(seqs, 140)
    train_items = set(np.concatenate(loo.train_sequences).tolist())
    leaked = train_items & (set(loo.valid.target.tolist()) | set(loo.test.target.tolist()))
    assert not leaked, f"valid/test targets in training: {sorted(leaked)[:5]}"


def test_oracle_scores_one_and_blind_scores_zero() -> None:
    """A recommender that puts the target first gets Recall = NDCG = 1; one that never returns it gets 0."""
    loo = protocols.leave_one_out(_sequences(), 40)
    lookup = {tuple(h.tolist()): t for h, t in zip(loo.test.history, loo.test.target)}

    def oracle(history: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(history), k), -1)
        out[:, 0] = [lookup[tuple(h.tolist())] for h in history]
        return out

    def blind(history: np.ndarray, k: int) -> np.ndarray:
        return np.full((len(history), k), 40)  # an id outside the catalogue: never the target

    good = protocols.evaluate_next_item(oracle, loo.test, batch_size=7)
    bad = protocols.evaluate_next_item(blind, loo.test, batch_size=7)
    for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert good[key] == pytest.approx(1.0), f"oracle {key} = {good[key]}"
        assert bad[key] == 0.0, f"blind {key} = {bad[key]}"


def test_wrong_shape_is_an_error() -> None:
    """A recommender that returns fewer than k items per row is rejected, not silently scored."""
    loo = protocols.leave_one_out(_sequences(), 40)
    with pytest.raises(ValueError, match="shape"):
        protocols.evaluate_next_item(lambda h, k: np.zeros((len(h), k - 1), dtype=np.int64), loo.test)


def test_topk_ties_break_by_lower_id() -> None:
    """Equal scores are ordered by item id, so [0, 5, 5, 1, 5] gives top-3 [1, 2, 4]."""
    scores = torch.tensor([[0.0, 5.0, 5.0, 1.0, 5.0], [3.0, 2.0, 1.0, 0.0, 4.0]])
    top = protocols.topk_by_score(scores, 3)
    assert top.tolist() == [[1, 2, 4], [4, 0, 1]], f"top {top.tolist()}"


def test_next_session_oracle_and_empty_sessions() -> None:
    """Returning the positives first gives session recall/NDCG 1; sessions without positives are not counted."""
    history = np.array([[1, 2, -1], [3, -1, -1], [4, 5, 6]])
    positives = [np.array([7, 8]), np.array([], dtype=np.int64), np.array([9])]
    samples = protocols.NextSessionSet(history, positives)
    answers = {1: [7, 8], 3: [], 4: [9]}

    def oracle(h: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(h), k), -1)
        for row, hist in enumerate(h):
            items = answers[int(hist[0])]
            out[row, : len(items)] = items
        return out

    res = protocols.evaluate_next_session(oracle, samples, m=3, ks=(10,))
    assert res["n_sessions"] == 2, f"evaluated {res['n_sessions']} sessions, expected 2"
    for key in ("session_recall@3", "session_ndcg@3", "recall@10"):
        assert res[key] == pytest.approx(1.0), f"oracle {key} = {res[key]}"


def test_topk_pads_when_k_exceeds_catalogue() -> None:
    """Asking for 4 items out of 3 gives the 3 ranked ids and one -1, so the harness's shape check holds."""
    top = protocols.topk_by_score(torch.tensor([[0.1, 0.3, 0.2]]), 4)
    assert top.tolist() == [[1, 2, 0, -1]], f"top {top.tolist()}"
