"""The embedding check: the kNN next-item recommender and the held-out samples it is scored on."""

from __future__ import annotations

import numpy as np
import polars as pl

from onerec.embed.knn import evaluate, held_out, knn_topk, popularity_ranking


def test_knn_beats_popularity_on_planted_structure(trained: dict) -> None:
    """On held-out leave-one-out targets, kNN on aligned embeddings beats popularity and content-only."""
    res = evaluate({"aligned": trained["aligned"], "content": trained["content"]}, trained["popularity"],
                   trained["samples"], "test", last_k=5, ks=[10])
    r = {name: m["recall@10"] for name, m in res["methods"].items()}
    assert res["samples"] == trained["samples"].filter(pl.col("split") == "test").height, "test samples lost"
    assert r["aligned"] > r["popularity"] + 0.3, f"aligned kNN does not beat popularity: {r}"
    assert r["aligned"] > r["content"] + 0.3, f"aligned kNN does not beat content-only: {r}"


def test_knn_query_is_mean_of_history() -> None:
    """With orthogonal items, a one-item history ranks that item first; a two-item history ranks both first."""
    emb = np.eye(6, dtype=np.float32)
    emb[5] = np.array([1, 1, 0, 0, 0, 0], np.float32) / np.sqrt(2)  # item 5 sits between items 0 and 1
    history = np.array([[3, -1], [0, 1], [-1, -1]])
    fallback = np.array([4, 2, 0, 1, 3, 5])
    top = knn_topk(emb, history, k=3, fallback=fallback)
    assert top[0, 0] == 3, f"one-item history did not rank its item first: {top[0]}"
    assert top[1, 0] == 5 and set(top[1, 1:]) == {0, 1}, f"mean of items 0 and 1 should rank 5, then 0/1: {top[1]}"
    assert top[2].tolist() == [4, 2, 0], f"empty history should fall back to popularity: {top[2]}"


def test_popularity_ties_by_item_id() -> None:
    """Popularity ranks by count, equal counts by the lower item id."""
    assert popularity_ranking(np.array([1, 3, 3, 0, 5]), 4).tolist() == [4, 1, 2, 0]


def test_held_out_keeps_positive_targets_only() -> None:
    """P = target[target_positive], deduplicated; samples with no positive target are not evaluated."""
    samples = pl.DataFrame(
        {"split": ["test", "test", "valid", "test"], "history": [[1, 2, 3], [4], [5], []],
         "target": [[7, 8, 7, 9], [1, 2], [3], [6]],
         "target_positive": [[True, False, True, True], [False, False], [True], [True]]},
        schema_overrides={"history": pl.List(pl.Int32), "target": pl.List(pl.Int32)},
    )
    history, relevant = held_out(samples, "test", last_k=2)
    assert history.tolist() == [[2, 3], [-1, -1]], f"history tails wrong: {history.tolist()}"
    assert [sorted(r[r >= 0].tolist()) for r in relevant] == [[7, 9], [6]], f"relevant sets wrong: {relevant}"
