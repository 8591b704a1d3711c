"""RQ-VAE tokenizer (TIGER, Rajput et al. 2023): the baseline that shows the hourglass effect.

Design choices
- Encoder and decoder are MLPs (d -> hidden -> hidden -> latent and back, ReLU). L residual
  codebooks of K vectors live in the latent space.
- Quantisation: r_1 = z = E(x); at level l, s_l = argmin_k ||r_l - c^l_k||^2, r_{l+1} = r_l - c^l_{s_l}.
  z_q = sum_l c^l_{s_l}; the decoder sees z + sg(z_q - z) (straight-through estimator, VQ-VAE eq. 3).
- Loss = ||x - D(z_q)||^2 + sum_l ( ||sg(r_l) - c^l_{s_l}||^2 + beta ||r_l - sg(c^l_{s_l})||^2 )
  (codebook loss + commitment loss, VQ-VAE eq. 3, summed over levels as in RQ-VAE).
- Codebooks are initialised by residual k-means (faiss, seeded) on the latents of the untrained
  encoder (every item's, or the first batch's as TIGER does: ``init="batch"``); there is no dead-code
  reset, so unused codes stay unused -- this is the method as published, and the collapse it produces
  is the point of comparison (the literature's hourglass is at the middle levels; on our real data it
  is at level 0, see docs/results/tokenizer.md).
- Defaults (two hidden layers of 256, Adam lr 1e-3) train stably on CPU; TIGER's published recipe is
  ``hidden_dims=[512, 256, 128]``, ``optimizer="adagrad"``, ``lr=0.4``, ``init="batch"``.
- Everything is seeded: weights and batch order from a ``torch.Generator``; CPU training in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onerec.tokenizer.kmeans import ResidualCodes, fit_kmeans_level, residual_quantize


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """MLP auto-encoder with ``levels`` residual codebooks of ``k`` latent vectors."""

    def __init__(self, dim: int, latent: int, hidden: int | list[int], levels: int, k: int) -> None:
        super().__init__()
        widths = [hidden, hidden] if isinstance(hidden, int) else list(hidden)
        self.encoder = _mlp([dim, *widths, latent])
        self.decoder = _mlp([latent, *widths[::-1], dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, k, latent))  # (L, K, latent)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """z (B, latent) -> (z_q (B, latent), codes (B, L), vq loss terms (L, 2), residuals after each level)."""
        residual = z
        z_q = torch.zeros_like(z)
        codes, terms, residuals = [], [], []
        for book in self.codebooks:  # (K, latent)
            dist = torch.cdist(residual.detach(), book.detach())  # (B, K)
            idx = dist.argmin(dim=1)  # (B,)
            chosen = book[idx]  # (B, latent)
            codebook_loss = (residual.detach() - chosen).pow(2).sum(-1).mean()
            commitment = (residual - chosen.detach()).pow(2).sum(-1).mean()
            terms.append(torch.stack([codebook_loss, commitment]))
            z_q = z_q + chosen
            residual = residual - chosen
            codes.append(idx)
            residuals.append(residual)
        return z_q, torch.stack(codes, dim=1), torch.stack(terms), residuals

    def forward(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, d) -> (loss scalar, codes (B, L))."""
        z = self.encoder(x)  # (B, latent)
        z_q, codes, terms, _ = self.quantize(z)
        x_hat = self.decoder(z + (z_q - z).detach())  # straight-through
        recon = (x - x_hat).pow(2).sum(-1).mean()
        return recon + terms[:, 0].sum() + beta * terms[:, 1].sum(), codes


@dataclass
class RQVAEResult:
    codes: ResidualCodes  # codebooks (L, K, latent) and latent-space residual MSE per level
    model: RQVAE
    recon_mse: float  # mean over items and dims of ||x - D(z_q)||^2 in the embedding space
    losses: list[float]  # mean training loss per epoch
    codes_used: list[list[int]]  # per epoch, the distinct codes used at each level (collapse over training)


def train_rqvae(
    x: np.ndarray,
    levels: int,
    k: int,
    seed: int,
    latent: int = 32,
    hidden: int | list[int] = 256,
    epochs: int = 30,
    batch_size: int = 1024,
    lr: float = 1e-3,
    beta: float = 0.25,
    optimizer: str = "adam",
    init: str = "all",
) -> RQVAEResult:
    """Train an RQ-VAE on ``x`` (N, d) and return the codes of every item.

    ``hidden``: one width (two hidden layers of it) or the list of hidden widths of the encoder (the decoder
    mirrors it). ``optimizer``: "adam" or "adagrad"; ``init``: k-means init on "all" items' latents or on
    the first (seeded, shuffled) "batch" of ``batch_size`` items.
    """
    if optimizer not in ("adam", "adagrad") or init not in ("all", "batch"):
        raise ValueError(f"unknown RQ-VAE optimizer {optimizer!r} or init {init!r}")
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, d)
    n, dim = x_t.shape
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RQVAE(dim, latent, hidden, levels, k)
    with torch.no_grad():  # k-means init of the codebooks on the untrained encoder's latents
        first = x_t if init == "all" else x_t[torch.randperm(n, generator=gen)[:batch_size]]
        z = model.encoder(first).numpy()
        seeded = residual_quantize(z, levels, lambda r, level: fit_kmeans_level(r, k, seed + level, iters=10))
        model.codebooks.copy_(torch.from_numpy(seeded.codebooks))
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.Adagrad
    opt = opt_cls(model.parameters(), lr=lr)
    losses, used = [], []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = x_t[order[start : start + batch_size]]  # (B, d)
            loss, _ = model(batch, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / n)
        with torch.no_grad():
            epoch_codes = model.quantize(model.encoder(x_t))[1]  # (N, L)
        used.append([int(torch.unique(epoch_codes[:, level]).numel()) for level in range(levels)])
    model.eval()
    with torch.no_grad():
        z = model.encoder(x_t)  # (N, latent)
        z_q, codes, _, residuals = model.quantize(z)
        recon = float((x_t - model.decoder(z_q)).pow(2).mean())
        mse = [float(r.pow(2).mean()) for r in residuals]
        result = ResidualCodes(
            codes.numpy().astype(np.int64), model.codebooks.detach().numpy().copy(), mse, float(z.pow(2).mean())
        )
    return RQVAEResult(result, model, recon, losses, used)
