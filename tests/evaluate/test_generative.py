"""The generative adapter ranks the top beam first, then new items of the next beams."""

from __future__ import annotations

import numpy as np

from onerec.evaluate.generative import union_of_beams


def test_union_of_beams_keeps_top_beam_first() -> None:
    """Beams [[3,1],[1,4],[-1,5]] -> [3, 1, 4, 5, -1]: top beam, then unseen items in beam order, -1 padding."""
    beams = np.array([[[3, 1], [1, 4], [-1, 5]]])
    ranked = union_of_beams(beams, 5)
    assert ranked.tolist() == [[3, 1, 4, 5, -1]], f"ranked {ranked.tolist()}"


def test_marginal_order_keeps_top_beam_and_ranks_the_rest_by_beam_mass() -> None:
    """With log-probs, the top beam stays first; item 7 (in beams 2 and 3, mass 0.3 + 0.2) outranks item 4
    (beam 1 only, 0.25) although beam order puts 4 first; an unfilled beam (-inf) adds no mass, and items of
    equal mass keep beam order."""
    beams = np.array([[[3, 1], [1, 4], [7, 5], [7, 6], [8, 9]]])
    logp = np.log(np.array([[0.25, 0.25, 0.3, 0.2, 1e-300]]))
    logp[0, 4] = -np.inf
    ranked = union_of_beams(beams, 7, logp)
    assert ranked[0, :2].tolist() == [3, 1], "the top beam must stay the first m entries"
    assert ranked[0, 2] == 7, f"shared item 7 should rank third, got {ranked.tolist()}"
    assert set(ranked[0].tolist()) == set(union_of_beams(beams, 7)[0].tolist()), "same union, only reordered"
    assert ranked[0].tolist() == [3, 1, 7, 5, 4, 6, 8], f"by mass 0.5, 0.3, 0.25, 0.2, then 0 in beam order: {ranked}"
