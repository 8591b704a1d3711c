"""The generative adapter ranks the top beam first, then new items of the next beams."""

from __future__ import annotations

import numpy as np

from onerec.evaluate.generative import union_of_beams


def test_union_of_beams_keeps_top_beam_first() -> None:
    """Beams [[3,1],[1,4],[-1,5]] -> [3, 1, 4, 5, -1]: top beam, then unseen items in beam order, -1 padding."""
    beams = np.array([[[3, 1], [1, 4], [-1, 5]]])
    ranked = union_of_beams(beams, 5)
    assert ranked.tolist() == [[3, 1, 4, 5, -1]], f"ranked {ranked.tolist()}"
