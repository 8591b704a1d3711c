"""The generative adapter ranks the top beam first, then new items of the next beams."""

from __future__ import annotations

import numpy as np

from onerec.evaluate.generative import marginal_ranking, union_of_beams


def test_union_of_beams_keeps_top_beam_first() -> None:
    """Beams [[3,1],[1,4],[-1,5]] -> [3, 1, 4, 5, -1]: top beam, then unseen items in beam order, -1 padding."""
    beams = np.array([[[3, 1], [1, 4], [-1, 5]]])
    ranked = union_of_beams(beams, 5)
    assert ranked.tolist() == [[3, 1, 4, 5, -1]], f"ranked {ranked.tolist()}"


def test_marginal_ranking_keeps_the_session_and_ranks_the_rest_by_beam_mass() -> None:
    """The first m entries are the top beam; then an item held by several beams outranks one held by a single
    better beam when its summed probability is larger; ties keep beam order; dead beams (-inf) count for nothing."""
    items = np.array([[[1, 2, 3], [4, 5, 6], [7, 5, 8], [9, 5, 10], [11, 12, 13]]])
    logp = np.log(np.array([[0.4, 0.2, 0.2, 0.2, 1.0]]))
    logp[0, 4] = -np.inf  # the last beam is dead
    ranked = marginal_ranking(items, logp, 8)
    assert ranked[0, :3].tolist() == [1, 2, 3], "the session (top beam) must come first"
    assert ranked[0, 3] == 5, f"item 5 (mass 0.6) must lead the rest: {ranked.tolist()}"
    assert ranked[0, 4:].tolist() == [4, 6, 7, 8], "equal masses keep beam order"
    assert union_of_beams(items, 8)[0, 3] == 4, "beam order would put the second beam's first item there"
    assert not np.isin([11, 12, 13], ranked).any(), "a dead beam's items must not be ranked"


def test_marginal_ranking_of_random_beams_is_distinct_and_covers_the_union() -> None:
    """On random beams: distinct items, the same first m as beam order, and the same set when k covers all."""
    rng = np.random.default_rng(0)
    items = rng.integers(0, 30, size=(20, 8, 4))
    logp = np.sort(rng.normal(size=(20, 8)), axis=1)[:, ::-1]
    full = marginal_ranking(items, logp, 40)
    beam = union_of_beams(items, 40)
    for row in range(20):
        got = full[row][full[row] >= 0]
        assert len(set(got.tolist())) == len(got)
        assert set(got.tolist()) == set(beam[row][beam[row] >= 0].tolist())
        n_top = len(set(items[row, 0].tolist()))
        assert got[:n_top].tolist() == beam[row][:n_top].tolist()
