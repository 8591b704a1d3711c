"""The contrastive loss, seeded training and the planted co-engagement structure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from onerec.embed.encoder import content_projection, info_nce, train_aligned


def test_info_nce_uniform_is_log_batch() -> None:
    """When every embedding is the same, each row's softmax is uniform over B columns: loss = ln B."""
    z = torch.nn.functional.normalize(torch.ones(5, 3), dim=-1)
    loss = info_nce(z, z, torch.arange(5), torch.arange(5, 10), temperature=0.1)
    assert math.isclose(float(loss), math.log(5), rel_tol=1e-6), f"{float(loss)} != ln 5"


def test_info_nce_masks_repeated_items() -> None:
    """A column holding the row's own positive item again is no negative: with B = 2 and equal b's, loss = 0."""
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # b_0 = b_1 = item 7, far from a_0
    loss = info_nce(z_a, z_b, torch.tensor([1, 2]), torch.tensor([7, 7]), temperature=1.0)
    # a->b rows: the other column is item 7 again, masked -> each row has one finite logit: CE 0.
    # b->a rows: b_0 vs (a_0, a_1) = (0, 1) -> -log(e^0/(e^0+e^1)); b_1 vs (a_0, a_1) -> -log(e^1/(e^0+e^1)).
    want = 0.5 * (0.0 + 0.5 * (math.log(1 + math.e) + math.log(1 + math.e) - 1.0))
    assert math.isclose(float(loss), want, rel_tol=1e-6), f"{float(loss)} != {want}"


def test_loss_falls(trained: dict) -> None:
    """Training lowers the InfoNCE loss well below its first-epoch value."""
    first, last = trained["history"][0]["loss"], trained["history"][-1]["loss"]
    assert last < 0.6 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"


def test_aligned_pulls_co_engaged_items_together(trained: dict) -> None:
    """Items of one planted group end up closer than random pairs (and closer than content-only puts them)."""
    group = trained["group"]
    same = group[:, None] == group[None, :]
    off = ~np.eye(len(group), dtype=bool)
    gaps = {}
    for name in ("aligned", "content"):
        emb = trained[name]
        cos = emb @ emb.T
        gaps[name] = cos[same & off].mean() - cos[~same].mean()
    assert gaps["aligned"] > 0.5, f"co-engaged vs random cosine gap only {gaps['aligned']:.3f}"
    assert gaps["aligned"] > gaps["content"] + 0.4, f"alignment adds little over content: {gaps}"


def test_same_seed_same_embeddings(trained: dict) -> None:
    """Two runs with the same seed give identical embeddings; another seed gives different ones."""
    cfg = dataclasses.replace(trained["cfg"], epochs=2)
    pairs, features = trained["pairs"][:512], trained["features"]
    a, _ = train_aligned(features, pairs, cfg)
    b, _ = train_aligned(features, pairs, cfg)
    c, _ = train_aligned(features, pairs, dataclasses.replace(cfg, seed=1))
    np.testing.assert_array_equal(a, b, err_msg="same seed, different embeddings")
    assert not np.array_equal(a, c), "a different seed gave identical embeddings"
    np.testing.assert_array_equal(content_projection(features, 8, 3), content_projection(features, 8, 3))


def test_content_projection_preserves_feature_cosines(trained: dict) -> None:
    """Content embeddings' cosines track the cosines of the sparse feature vectors (random projection)."""
    x = trained["features"].dense()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    emb = content_projection(trained["features"], 512, seed=0)
    iu = np.triu_indices(len(x), 1)
    corr = np.corrcoef((x @ x.T)[iu], (emb @ emb.T)[iu])[0, 1]
    assert corr > 0.9, f"cosine correlation {corr:.3f} too low for a 512-d projection"


def test_info_nce_logq_correction_exact() -> None:
    """logQ correction: column j's logit drops by log q_j. Equal embeddings, q = (.9, .1): the row whose positive
    is the popular item gets softmax 1/.9 / (1/.9 + 1/.1) = .1, the other .9 (both directions alike)."""
    z = torch.nn.functional.normalize(torch.ones(2, 3), dim=-1)
    items = torch.tensor([0, 1])
    log_q = torch.log(torch.tensor([0.9, 0.1]))
    loss = info_nce(z, z, items, items, temperature=0.5, log_q=log_q)
    want = 0.5 * (-math.log(0.1) - math.log(0.9))
    assert math.isclose(float(loss), want, rel_tol=1e-6), f"{float(loss)} != {want}"
    # a constant log q shifts every column alike: the loss is the uncorrected one
    same = info_nce(z, z, items, items, temperature=0.5, log_q=torch.full((2,), -3.0))
    assert math.isclose(float(same), math.log(2), rel_tol=1e-6)


def test_logq_correction_keeps_popularity(trained: dict) -> None:
    """Pairs whose second item is drawn by popularity, independent of the first: plain InfoNCE has nothing to
    learn (PMI = 0), so cosines carry no popularity; with the logQ correction the scores estimate log p(b | a),
    and the mean cosine to all items orders items by popularity."""
    rng = np.random.default_rng(0)
    n = trained["features"].n_items
    pop = 1.0 / np.arange(1, n + 1) ** 1.2
    pop = pop[rng.permutation(n)]
    pop /= pop.sum()
    pairs = np.stack([rng.integers(0, n, 4000), rng.choice(n, 4000, p=pop)], axis=1)
    corr = {}
    for flag in (False, True):
        cfg = dataclasses.replace(trained["cfg"], epochs=6, logq_correction=flag)
        emb, _ = train_aligned(trained["features"], pairs, cfg)
        centre = emb.mean(axis=0)
        score = emb @ centre
        rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
        corr[flag] = float(np.corrcoef(rank(score), rank(pop))[0, 1])
    assert corr[True] > 0.5, f"logQ-corrected scores do not follow popularity: Spearman {corr[True]:.2f}"
    assert corr[True] > corr[False] + 0.3, f"correction adds no popularity: {corr}"
