"""Properties of balanced K-means (fast method and the paper's Algorithm 1) and residual quantisation."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.tokenizer.balanced import (
    capacity_assign,
    cluster_sizes,
    exchange_refine,
    fit_balanced_level,
    paper_balanced_kmeans,
    sse,
)
from onerec.tokenizer.kmeans import nearest_clusters, residual_kmeans, residual_quantize


def _clustered(n: int, d: int = 8, blobs: int = 5, seed: int = 0) -> np.ndarray:
    """Unequal Gaussian blobs: plain k-means would give very unequal clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(blobs, d)) * 4
    weights = np.arange(1, blobs + 1) ** 2 / np.sum(np.arange(1, blobs + 1) ** 2)
    return (centers[rng.choice(blobs, size=n, p=weights)] + rng.normal(size=(n, d))).astype(np.float32)


def _fast(r: np.ndarray, level: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return fit_balanced_level(r, k, seed=level, iters=4, candidates=6)


@pytest.mark.parametrize("n", [640, 653])  # divisible by K = 16, and not
def test_fast_balanced_sizes_within_one_at_every_level(n: int) -> None:
    """Every cluster of every level holds floor(N/K) or ceil(N/K) items, exactly N mod K the larger."""
    k = 16
    result = residual_quantize(_clustered(n), 3, lambda r, level: _fast(r, level, k))
    for level in range(3):
        sizes = np.bincount(result.codes[:, level], minlength=k)
        assert sizes.min() >= n // k and sizes.max() <= -(-n // k), f"level {level} sizes {sizes.min()}..{sizes.max()}"
        assert (sizes > n // k).sum() == n % k, f"level {level}: {(sizes > n // k).sum()} large clusters, want {n % k}"


@pytest.mark.parametrize("n", [240, 251])
def test_paper_algorithm_sizes_within_one(n: int) -> None:
    """The paper's Algorithm 1 also yields exact floor/ceil(N/K) cluster sizes."""
    _, assign = paper_balanced_kmeans(_clustered(n), 8, seed=0, max_iters=5)
    sizes = np.bincount(assign, minlength=8)
    assert np.array_equal(np.sort(sizes), np.sort(cluster_sizes(n, 8))), f"sizes {sizes}"


def test_residual_norm_falls_level_by_level() -> None:
    """The residual MSE after each level is below the one before, for balanced and plain k-means."""
    x = _clustered(600)
    for name, result in (
        ("balanced", residual_quantize(x, 3, lambda r, level: _fast(r, level, 8))),
        ("kmeans", residual_kmeans(x, 3, 8, seed=0, iters=10)),
    ):
        mses = [result.input_mse, *result.residual_mse]
        assert all(b < a for a, b in zip(mses, mses[1:])), f"{name}: residual MSE did not fall: {mses}"


def test_same_seed_same_codes() -> None:
    """Two runs with the same seed give identical codes; another seed gives different ones."""
    x = _clustered(500)
    run = lambda seed: residual_quantize(x, 2, lambda r, lv: fit_balanced_level(r, 8, seed + lv, iters=3)).codes  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert np.array_equal(a, b), "same seed gave different codes"
    assert not np.array_equal(a, c), "different seeds gave identical codes"


def test_capacity_assign_is_exact_for_skewed_centroids() -> None:
    """Even when every item's nearest centroid is the same one, the assignment has exact sizes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(301, 4)).astype(np.float32)
    centroids = np.concatenate([np.zeros((1, 4)), 50 + rng.normal(size=(9, 4))]).astype(np.float32)
    dist, cand = nearest_clusters(x, centroids, 3)
    assign = capacity_assign(x, centroids, cand, dist)
    sizes = np.sort(np.bincount(assign, minlength=10))
    assert np.array_equal(sizes, np.sort(cluster_sizes(301, 10))), f"sizes {sizes}"


def test_exchange_keeps_sizes_and_never_raises_sse() -> None:
    """Pairwise exchanges keep every cluster size and do not increase the SSE for fixed centroids."""
    x = _clustered(800)
    centroids = x[np.random.default_rng(1).choice(800, 16, replace=False)]
    dist, cand = nearest_clusters(x, centroids, 6)
    assign = capacity_assign(x, centroids, cand, dist)
    refined = exchange_refine(x, centroids, assign, cand, rounds=2)
    assert np.array_equal(np.bincount(assign, minlength=16), np.bincount(refined, minlength=16)), "sizes changed"
    before, after = sse(x, centroids, assign), sse(x, centroids, refined)
    assert after <= before + 1e-6 * before, f"exchange raised the SSE: {before:.2f} -> {after:.2f}"


def test_fast_method_beats_paper_algorithm_objective() -> None:
    """On clustered data the fast method's within-cluster SSE is below Algorithm 1's (same sizes)."""
    x = _clustered(1200, blobs=6)
    c_fast, a_fast = fit_balanced_level(x, 16, seed=0, iters=8)
    c_paper, a_paper = paper_balanced_kmeans(x, 16, seed=0, max_iters=8)
    fast, paper = sse(x, c_fast, a_fast), sse(x, c_paper, a_paper)
    assert fast < paper, f"fast SSE {fast:.1f} not below paper SSE {paper:.1f}"


@pytest.mark.parametrize(("k", "c"), [(1000, 16), (300, 7), (64, 16), (50, 1), (20, 20)])
def test_nearest_clusters_is_exact_top_c(k: int, c: int) -> None:
    """The numpy top-c search returns the exact c nearest centroids, ascending, ties to the lower id."""
    rng = np.random.default_rng(k)
    x = rng.normal(size=(700, 8)).astype(np.float32)
    centroids = rng.normal(size=(k, 8)).astype(np.float32)
    centroids[k // 2] = centroids[k // 3]  # an exact tie: the lower id must come first
    dist, ids = nearest_clusters(x, centroids, c)
    exact = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)  # (N, K)
    ref = np.argsort(exact, axis=1, kind="stable")[:, :c]
    assert ids.shape == (700, c) and dist.shape == (700, c)
    np.testing.assert_allclose(dist, np.take_along_axis(exact, ref, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), np.take_along_axis(exact, ref, 1),
                               rtol=1e-4, atol=1e-4)
    assert (np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all(), "a centroid listed twice"
    both = (ids == k // 3).any(1) & (ids == k // 2).any(1)
    pos = lambda j: np.argmax(ids[both] == j, axis=1)  # noqa: E731
    assert (pos(k // 3) < pos(k // 2)).all(), "tie not broken towards the lower id"


def test_nearest_clusters_same_with_threads() -> None:
    """Blocks searched in a thread pool give the same result as one thread."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8)).astype(np.float32)
    centroids = rng.normal(size=(1024, 8)).astype(np.float32)
    one, many = nearest_clusters(x, centroids, 16, threads=1), nearest_clusters(x, centroids, 16, threads=2)
    assert np.array_equal(one[1], many[1]) and np.array_equal(one[0], many[0])


def test_group_order_is_lexsort() -> None:
    """The two-pass (stable sort, radix on uint16) order equals lexsort by (group, priority, position)."""
    from onerec.tokenizer.balanced import _group_order

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, size=5000)
    prio = rng.integers(0, 20, size=5000).astype(np.float32)  # many ties
    prio[::7] = -np.inf
    assert np.array_equal(_group_order(groups, prio, 300), np.lexsort((np.arange(5000), prio, groups)))


def _exchange_all_items(x, centroids, assign, cand, rounds):
    """Reference exchange: every item sorted every round, distances recomputed from scratch."""
    assign = assign.copy()
    n, k, sweep = len(x), len(centroids), min(cand.shape[1] - 1, 3)
    sq = lambda a: np.einsum("nd,nd->n", x - centroids[a], x - centroids[a])  # noqa: E731
    for t in range(rounds * sweep):
        cur = sq(assign)
        is_own = cand == assign[:, None]
        own_before = np.cumsum(is_own, axis=1) - is_own
        col = np.argmax((np.arange(cand.shape[1])[None] - own_before == t % sweep) & ~is_own, axis=1)
        alt = cand[np.arange(n), col]
        gain = cur - sq(alt)
        edge = assign * k + alt
        order = np.lexsort((np.arange(n), -gain, edge))
        groups = {}
        for i in order:
            groups.setdefault((assign[i], alt[i]), []).append(i)
        movers = []
        for (a, b), members in groups.items():
            for i, j in zip(members, groups.get((b, a), [])):
                if gain[i] + gain[j] > 1e-7 * (abs(gain[i]) + abs(gain[j]) + 1e-12):
                    movers.append(i)
        movers = np.array(movers, dtype=np.int64)
        assign[movers] = alt[movers]
    return assign


def test_exchange_pruning_matches_sorting_every_item() -> None:
    """Sorting only the items that can be in a gaining pair makes the same swaps as sorting all."""
    x = _clustered(1500)
    centroids = x[np.random.default_rng(2).choice(1500, 24, replace=False)]
    dist, cand = nearest_clusters(x, centroids, 6)
    assign = capacity_assign(x, centroids, cand, dist)
    assert np.array_equal(exchange_refine(x, centroids, assign, cand, rounds=2),
                          _exchange_all_items(x, centroids, assign, cand, rounds=2))
