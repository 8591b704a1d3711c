"""Properties of the RQ-VAE tokenizer: seeded, and it shows the hourglass that balanced K-means avoids."""

from __future__ import annotations

import numpy as np
import pytest

from onerec.tokenizer.balanced import fit_balanced_level
from onerec.tokenizer.kmeans import residual_quantize
from onerec.tokenizer.rqvae import train_rqvae


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """12 tight clusters in 16-d: after level 0 the residual is nearly pure noise."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 16)) * 3
    return (centers[rng.integers(0, 12, 1500)] + 0.05 * rng.normal(size=(1500, 16))).astype(np.float32)


def _rqvae(x: np.ndarray, seed: int = 0):
    return train_rqvae(x, 3, 16, seed, latent=8, hidden=32, epochs=8, batch_size=256)


def test_rqvae_uses_markedly_fewer_middle_codes_than_balanced(clustered: np.ndarray) -> None:
    """At the middle level RQ-VAE uses at most half of K codes while balanced K-means uses all K."""
    rq = _rqvae(clustered).codes.codes
    bal = residual_quantize(clustered, 3, lambda r, lv: fit_balanced_level(r, 16, lv, iters=4)).codes
    used_rq, used_bal = len(np.unique(rq[:, 1])), len(np.unique(bal[:, 1]))
    assert used_bal == 16, f"balanced used {used_bal}/16 codes at level 1"
    assert used_rq <= 8, f"RQ-VAE used {used_rq}/16 codes at level 1: no hourglass"


def test_rqvae_same_seed_same_codes(clustered: np.ndarray) -> None:
    """Two RQ-VAE trainings with the same seed give identical codes and losses."""
    a, b = _rqvae(clustered[:600]), _rqvae(clustered[:600])
    assert np.array_equal(a.codes.codes, b.codes.codes), "same seed gave different RQ-VAE codes"
    assert a.losses == b.losses, "same seed gave different training losses"


def test_rqvae_training_lowers_the_loss(clustered: np.ndarray) -> None:
    """The mean training loss of the last epoch is below the first epoch's."""
    losses = _rqvae(clustered[:600]).losses
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"


def test_rqvae_tiger_recipe_options(clustered: np.ndarray) -> None:
    """TIGER's recipe (tapered encoder, Adagrad, first-batch init) trains, is seeded, and tracks code usage."""
    kw = dict(latent=8, hidden=[32, 16, 8], epochs=3, batch_size=128, lr=0.05, optimizer="adagrad", init="batch")
    a = train_rqvae(clustered[:600], 3, 16, 0, **kw)
    b = train_rqvae(clustered[:600], 3, 16, 0, **kw)
    assert [m.out_features for m in a.model.encoder if hasattr(m, "out_features")] == [32, 16, 8, 8]
    assert np.array_equal(a.codes.codes, b.codes.codes), "same seed gave different codes"
    assert len(a.codes_used) == 3 and all(1 <= u <= 16 for row in a.codes_used for u in row)
    assert a.codes_used[-1] == [len(np.unique(a.codes.codes[:, lv])) for lv in range(3)]
    with pytest.raises(ValueError, match="optimizer"):
        train_rqvae(clustered[:600], 3, 16, 0, optimizer="sgd")
