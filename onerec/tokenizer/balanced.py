"""Balanced K-means: every cluster holds exactly floor(N/K) or ceil(N/K) items (ONEREC.md section 2).

Two algorithms, chosen by ``TokenizerConfig.balanced_algorithm``:

``paper`` -- the OneRec paper's Algorithm 1, implemented as written, as the reference: w = N/K;
random initial centroids; repeat { U <- all items; for k = 1..K: sort U by distance to c_k, give the
first w to cluster k, set c_k to their mean, remove them from U } until the assignment stops
changing. Sequential over clusters and order-dependent (the last clusters get what is left).
Cluster k gets floor(N/K) items, the last N mod K clusters one more.

``greedy`` -- the fast method, a capacity-constrained k-means (Lloyd rounds alternating with a
constrained assignment step), vectorised with no Python loop over items:
- Candidates: each item's c nearest centroids (exact, ``kmeans.nearest_clusters``, in row blocks).
- Prices, ``balance_prices``: an auction-style dual ascent. Each overfull cluster raises a price
  just past the margin of its most movable members, so ``argmin_j dist_ij + price_j`` is (nearly)
  balanced and close to the optimal transport of items to clusters under the capacities (measured:
  3% lower SSE than proposals on raw distances on real embeddings). Costs below are priced costs.
- Assignment, ``capacity_assign``: deferred proposals. Every unassigned item proposes to its next
  candidate; each cluster accepts the proposers it prefers up to its remaining capacity; rejected
  items move to their next candidate. A cluster prefers items with the highest *regret* (the extra
  cost of their next candidate), so items with no good alternative are placed first. Items whose c
  candidates all filled up fall back to full distances against the clusters still open. Exact sizes
  come from two stages: capacity floor(N/K) everywhere (N - N mod K items placed), then the N mod K
  leftover items with capacity one more per cluster.
- Refinement, ``exchange_refine``: rounds of pairwise swaps. Each item names an alternative cluster
  (its t-th nearest cluster other than its own, t = 1..3, in turn); items moving a->b are matched
  rank by rank with items moving b->a (both sorted by gain); a pair swaps when the summed cost falls. Swaps keep every
  cluster size, and each accepted swap lowers the within-cluster SSE for the current centroids.
- Exchanges run on the final assignment only (in training rounds the centroid update is the descent
  step; measured on synthetic blobs: refining there too cost ~15% more time for no SSE gain).
- Centroids are the means of their clusters. Training rounds run on a seeded sample of at most
  ``train_points_per_centroid * K`` items (as faiss does for plain k-means); the final assignment of
  all N items is one more constrained assignment + refinement, then centroids are set to the means of
  the final clusters (the SSE-optimal codebook for that assignment).
- Speed (1M x 64, K = 1024, L = 3, 10 rounds, one thread: 140 s CPU, 1.6 GB peak RSS; one level at
  200k x 64, K = 1024: 26 s CPU against 54 s for the first version). Per assignment at 200k x 64,
  K = 1024, one thread, the first version spent ~5 s: top-16 search 2.5-2.8 (faiss flat search,
  mostly its heap), prices 0.9-1.0 (a stable argsort per round), exchange 1.0-1.5 (full (N, d)
  distances and a full lexsort per try), proposals 0.3, centroid means 0.2-0.4. Now: the search is
  numpy sgemm + threshold top-c (1.2-1.3 s); prices sort unstably (only the picked margin values
  matter: same prices); proposals order by two stable sorts, the second a linear radix sort of
  uint16 cluster ids, instead of ``lexsort`` (same order); priced costs are float32 (half the
  memory); the exchange computes its distances once and sorts only items that can be in a gaining
  swap (same swaps, 0.3 s); centroid sums are one float64 ``bincount`` per dimension (no (N, d)
  float64 copy). Results are unchanged up to float rounding in the search and the float32 costs.
"""

from __future__ import annotations

import numpy as np

from onerec.tokenizer.kmeans import nearest_clusters

FALLBACK_CHUNK = 16384  # leftover items ranked against all open clusters at a time
PRICE_CANDIDATES = 4  # prices are fitted on each item's 4 nearest clusters (4x cheaper than all c)
EXCHANGE_ALTERNATIVES = 3  # one refinement round tries each item's 3 nearest other clusters in turn
EXACT_CHUNK = 65536  # rows per chunk of exact distances (bounds the (rows, d) difference temporaries)


def cluster_sizes(n: int, k: int) -> np.ndarray:
    """(K,) exact target sizes: floor(N/K) everywhere, the last N mod K clusters one more."""
    sizes = np.full(k, n // k, dtype=np.int64)
    if n % k:
        sizes[k - n % k :] += 1
    return sizes


def centroid_means(x: np.ndarray, assign: np.ndarray, k: int, old: np.ndarray | None = None) -> np.ndarray:
    """(K, d) mean of each cluster (clusters with no item keep ``old``, or zero)."""
    counts = np.bincount(assign, minlength=k)
    sums = np.empty((k, x.shape[1]), dtype=np.float64)
    for j in range(x.shape[1]):  # float64 sums one dimension at a time: no (N, d) float64 copy of x
        sums[:, j] = np.bincount(assign, weights=x[:, j], minlength=k)
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    if old is not None:
        means[counts == 0] = old[counts == 0]
    return means


def sse(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray) -> float:
    """Within-cluster sum of squared distances of ``x`` (N, d) to their assigned centroids."""
    return float(np.sum((x - centroids[assign]).astype(np.float64) ** 2))


# ------------------------------------------------------------------------------------ the paper's algorithm
def paper_balanced_kmeans(x: np.ndarray, k: int, seed: int, max_iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """OneRec Algorithm 1 (reference, slow): (centroids (K, d), assign (N,)) with exact cluster sizes."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    sizes = cluster_sizes(n, k)
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(n, size=k, replace=False)].copy()  # (K, d)
    x_sq = np.einsum("nd,nd->n", x, x)  # (N,)
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iters):
        new = np.empty(n, dtype=np.int64)
        remaining = np.arange(n)
        for j in range(k):  # sequential over clusters, as in the paper
            dist = x_sq[remaining] - 2.0 * (x[remaining] @ centroids[j])  # (|U|,) up to ||c_j||^2
            w = int(sizes[j])
            if w < len(remaining):
                take = np.argpartition(dist, w - 1)[:w]
            else:
                take = np.arange(len(remaining))
            chosen = remaining[take]
            new[chosen] = j
            centroids[j] = x[chosen].mean(axis=0)
            keep = np.ones(len(remaining), dtype=bool)
            keep[take] = False
            remaining = remaining[keep]
        if np.array_equal(new, assign):
            break
        assign = new
    return centroids, assign


# ------------------------------------------------------------------------------------ the fast algorithm
def _group_order(groups: np.ndarray, prio: np.ndarray, k: int) -> np.ndarray:
    """``np.lexsort((arange, prio, groups))``: by group (< ``k``), then ``prio``, ties by position.

    Two stable argsorts instead: ``prio`` first, then the group ids as uint16, which numpy sorts by
    radix in linear time (lexsort makes three comparison-sort passes; measured 2x slower).
    """
    order = np.argsort(prio, kind="stable")
    ids = groups[order]
    return order[np.argsort(ids.astype(np.uint16) if k <= 1 << 16 else ids, kind="stable")]


def _propose(cand: np.ndarray, cost: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Deferred proposals over candidate lists (M, c) sorted by cost; returns assign (M,), -1 = unplaced.

    ``remaining`` (K,) capacities are decremented in place.
    """
    m, c = cand.shape
    k = remaining.shape[0]
    assign = np.full(m, -1, dtype=np.int64)
    ptr = np.zeros(m, dtype=np.int64)
    active = np.arange(m)
    # regret of an item at candidate t: cost of candidate t+1 minus cost of candidate t (last: large)
    regret = np.concatenate([np.diff(cost, axis=1), np.full((m, 1), np.inf, dtype=cost.dtype)], axis=1)
    while len(active):
        j = cand[active, ptr[active]]  # (A,) proposed cluster
        prio = -regret[active, ptr[active]]  # most regret first
        order = _group_order(j, prio, k)  # by cluster, then priority, ties by item id (active ascends)
        js = j[order]
        starts = np.flatnonzero(np.r_[True, js[1:] != js[:-1]])
        rank = np.arange(len(js)) - np.repeat(starts, np.diff(np.r_[starts, len(js)]))
        accept = rank < remaining[js]
        assign[active[order[accept]]] = js[accept]
        remaining -= np.bincount(js[accept], minlength=k)
        rejected = active[order[~accept]]
        ptr[rejected] += 1
        active = np.sort(rejected[ptr[rejected] < c])
    return assign


def _fill(x: np.ndarray, centroids: np.ndarray, cand: np.ndarray, dist: np.ndarray, cap: np.ndarray,
          assign: np.ndarray, todo: np.ndarray) -> None:
    """Place items ``todo`` into clusters with capacity ``cap`` (in place), candidates first, then all open."""
    everything = len(todo) == cand.shape[0]  # first stage: no (N, c) copies
    placed = _propose(cand if everything else cand[todo], dist if everything else dist[todo], cap)
    assign[todo] = placed
    left = todo[placed < 0]
    while len(left) and cap.sum() > 0:  # fallback: candidates all full; rank every cluster still open
        open_ids = np.flatnonzero(cap > 0)
        chunk = left[:FALLBACK_CHUNK]  # bounds memory at FALLBACK_CHUNK * K distances
        d_open, i_open = nearest_clusters(x[chunk], centroids[open_ids], len(open_ids))
        placed = _propose(open_ids[i_open], d_open, cap)
        assign[chunk] = placed
        left = np.concatenate([chunk[placed < 0], left[FALLBACK_CHUNK:]])


def balance_prices(cand: np.ndarray, dist: np.ndarray, cap: np.ndarray, prices: np.ndarray,
                   rounds: int) -> np.ndarray:
    """Dual prices (K,) that make ``argmin_j dist_ij + price_j`` (nearly) respect capacities ``cap``.

    Auction-style ascent, all clusters at once: an overfull cluster raises its price just past the
    margin (second-best minus best adjusted cost) of its ``count - cap``-th most movable member, so
    exactly those members would rather leave. Prices only rise; ``prices`` is updated in place.
    """
    n, c = cand.shape
    k = cap.shape[0]
    if c == 1:
        return prices
    rows = np.arange(n)
    eps = 1e-6 * float(np.mean(np.abs(dist[:, 0]))) + 1e-12
    tolerance = max(1, n // 1000)  # stop when at most 0.1% of items overflow: the proposals place them
    for _ in range(rounds):
        adj = dist + prices.astype(np.float32)[cand]  # (N, c)
        # best and second best by a loop over the c (<= 4) columns: numpy reduces short rows slowly
        first = np.zeros(n, dtype=np.int64)
        best_cost = adj[:, 0].copy()
        second = np.full(n, np.inf, dtype=np.float32)
        for j in range(1, c):
            col = adj[:, j]
            better = col < best_cost
            second = np.where(better, best_cost, np.minimum(second, col))
            best_cost = np.where(better, col, best_cost)
            first[better] = j
        margin = second - best_cost  # (N,)
        best = cand[rows, first]
        counts = np.bincount(best, minlength=k)
        excess = np.maximum(counts - cap, 0)
        if excess.sum() <= tolerance:
            break
        sel = np.flatnonzero(excess[best] > 0)
        scale = 2.0 * float(margin[sel][np.isfinite(margin[sel])].max(initial=0.0)) + 1.0
        key = best[sel] * scale + np.where(np.isfinite(margin[sel]), margin[sel], scale / 2)
        order = sel[np.argsort(key)]  # by cluster, then margin (ties: equal margins, any order will do)
        clusters = best[order]
        starts = np.flatnonzero(np.r_[True, clusters[1:] != clusters[:-1]])
        ids = clusters[starts]
        pick = starts + excess[ids] - 1  # the excess-th smallest margin in each cluster
        prices[ids] += margin[order[pick]] + eps
    return prices


def capacity_assign(x: np.ndarray, centroids: np.ndarray, cand: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Assignment (N,) with exact sizes floor/ceil(N/K), from candidate lists ``cand``/``dist`` (N, c)."""
    n, k = x.shape[0], centroids.shape[0]
    assign = np.full(n, -1, dtype=np.int64)
    cap = np.full(k, n // k, dtype=np.int64)
    _fill(x, centroids, cand, dist, cap, assign, np.arange(n))
    left = np.flatnonzero(assign < 0)  # exactly N mod K items
    if len(left):
        cap = np.ones(k, dtype=np.int64)
        _fill(x, centroids, cand, dist, cap, assign, left)
    return assign


def _sq_dist(x: np.ndarray, centroids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(N, m) exact squared distances ``||x_i - c_{ids[i, j]}||^2`` from differences, in row chunks."""
    out = np.empty(ids.shape, dtype=np.float32)
    for start in range(0, x.shape[0], EXACT_CHUNK):
        xb = x[start : start + EXACT_CHUNK]
        for j in range(ids.shape[1]):
            diff = xb - centroids[ids[start : start + EXACT_CHUNK, j]]
            out[start : start + EXACT_CHUNK, j] = np.einsum("nd,nd->n", diff, diff)
    return out


def exchange_refine(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, cand: np.ndarray,
                    rounds: int) -> np.ndarray:
    """Size-preserving pairwise swaps that lower the SSE for fixed ``centroids``; returns a new assign.

    The distances every round needs (own cluster, the first ``EXCHANGE_ALTERNATIVES + 1`` candidates)
    are computed once, exactly, and kept in step with the swaps. Only items that can be in a swap are
    sorted: a pair a->b, b->a swaps only if its summed gain is positive, so an item moving a->b needs a
    gain above ``-max gain of the items in b``; that bound is constant along its gain-sorted a->b
    group, so the survivors are a prefix of each group, ranks and matches are unchanged, and the swaps
    are the same as sorting every item (measured: ~24% of items survive on a priced assignment).
    """
    assign = assign.copy()
    n, c = cand.shape
    k = centroids.shape[0]
    sweep = min(c - 1, EXCHANGE_ALTERNATIVES)
    if c == 1 or rounds < 1:
        return assign
    rows = np.arange(n)
    near = cand[:, : sweep + 1]  # the t-th other cluster (t <= sweep) is among the first sweep + 1
    dist = _sq_dist(x, centroids, near)  # (N, sweep + 1)
    is_own = near == assign[:, None]
    has_own = is_own.any(axis=1)
    own = np.where(has_own, np.argmax(is_own, axis=1), sweep + 1)  # own column, or past the end
    cur = np.empty(n, dtype=np.float32)  # distance to the own centroid
    cur[has_own] = dist[has_own, own[has_own]]
    far = np.flatnonzero(~has_own)
    cur[far] = _sq_dist(x[far], centroids, assign[far, None])[:, 0]
    for t in range(rounds * sweep):
        pos = t % sweep
        col = pos + (own <= pos)  # the pos-th candidate that is not the item's own cluster
        alt = near[rows, col]
        gain = cur - dist[rows, col]  # > 0: the item would rather be in alt
        best_in = np.full(k, -np.inf, dtype=np.float32)
        np.maximum.at(best_in, assign, gain)  # best gain of any item now in each cluster
        sub = np.flatnonzero(gain + best_in[alt] > 0)  # the only items that can be in a gaining pair
        if not len(sub):
            continue
        edge = assign[sub] * k + alt[sub]
        o = np.lexsort((-gain[sub], edge))  # by edge, then gain descending, ties by item id
        order, e_sorted, m = sub[o], edge[o], len(sub)
        starts = np.flatnonzero(np.r_[True, e_sorted[1:] != e_sorted[:-1]])
        rank = np.arange(m) - np.repeat(starts, np.diff(np.r_[starts, m]))
        key = e_sorted * m + rank  # ascending
        rev_key = (alt[order] * k + assign[order]) * m + rank
        hit = np.minimum(np.searchsorted(key, rev_key), m - 1)
        matched = key[hit] == rev_key
        g_a, g_b = gain[order], gain[order[hit]]
        swap = matched & (g_a + g_b > 1e-7 * (np.abs(g_a) + np.abs(g_b) + 1e-12))  # symmetric in the pair
        if not swap.any():
            continue
        movers = order[swap]
        assign[movers] = alt[movers]
        own[movers] = col[movers]
        cur[movers] = dist[movers, col[movers]]
    return assign


def priced_assign(x: np.ndarray, centroids: np.ndarray, prices: np.ndarray, candidates: int,
                  price_rounds: int, refine_rounds: int) -> np.ndarray:
    """Exact-size assignment (N,): candidates, price ascent, proposals on priced costs, exchange refinement."""
    n, k = x.shape[0], centroids.shape[0]
    dist, cand = nearest_clusters(x, centroids, min(candidates, k))  # (N, c) ascending
    top = min(PRICE_CANDIDATES, cand.shape[1])
    balance_prices(cand[:, :top], dist[:, :top], np.full(k, -(-n // k), dtype=np.int64), prices, price_rounds)
    adj = dist + prices.astype(np.float32)[cand]  # (N, c) float32: half the memory of float64 costs
    order = np.argsort(adj, axis=1, kind="stable")
    adj, by_cost = np.take_along_axis(adj, order, axis=1), np.take_along_axis(cand, order, axis=1)
    del dist, order
    assign = capacity_assign(x, centroids, by_cost, adj)
    del adj, by_cost
    return exchange_refine(x, centroids, assign, cand, refine_rounds)


def fit_balanced_level(
    x: np.ndarray,
    k: int,
    seed: int,
    iters: int = 10,
    candidates: int = 16,
    refine_rounds: int = 1,
    train_points_per_centroid: int = 256,
    price_rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Fast balanced k-means of ``x`` (N, d): (centroids (K, d), assign (N,)) with exact cluster sizes."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    n_train = min(n, train_points_per_centroid * k)
    train = x if n_train == n else x[np.sort(rng.choice(n, size=n_train, replace=False))]
    centroids = train[rng.choice(n_train, size=k, replace=False)].copy()  # (K, d)
    prices = np.zeros(k, dtype=np.float64)
    for _ in range(iters):
        prices[:] = 0.0  # refitted every round (warm starts measured worse); the last round's seed the final
        assign = priced_assign(train, centroids, prices, candidates, price_rounds, 0)
        new = centroid_means(train, assign, k, centroids)
        shift = float(np.mean((new - centroids) ** 2))
        centroids = new
        if shift <= 1e-10 * (float(np.mean(centroids**2)) + 1e-12):
            break
    assign = priced_assign(x, centroids, prices, candidates, price_rounds, refine_rounds)
    return centroid_means(x, assign, k, centroids), assign
