"""Class Token Distribution Sampling (CTDS, spec Eq. 1-4): a VAE on CLIP's global feature.

    mu = W_mu g,  log_var = W_var g
    z  = mu + exp(log_var / 2) * eps,  eps ~ N(0, I)   (training)
    z  = mu                                             (inference)
    g_hat = decoder(z)                                  (Linear-GELU-Linear)

The prompt shift ``W_z z`` is added to every learnable prompt token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kl_divergence(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)), summed over the latent and averaged over the batch.

    ``-1/2 sum(1 + log_var - mu^2 - exp(log_var))`` per row (Eq. 2); 0 exactly when
    mu = 0 and log_var = 0, positive otherwise. Shapes (B, z) -> scalar.
    """
    if mu.shape != log_var.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and log_var {tuple(log_var.shape)} differ in shape")
    per_row = -0.5 * (1.0 + log_var - mu.pow(2) - log_var.exp()).sum(dim=-1)
    return per_row.mean()


@dataclass
class LatentSample:
    """What the VAE gives for a batch of B global features.

    mu, log_var: (B, z) posterior parameters.
    z: (B, z) the reparameterised sample (training) or mu (inference).
    reconstruction: (B, d_t) decoder output g_hat.
    """

    mu: Tensor
    log_var: Tensor
    z: Tensor
    reconstruction: Tensor


class GlobalFeatureVAE(nn.Module):
    """VAE over the global image feature g.

    Args:
        feature_dim: d_t, width of g.
        latent_dim: width of z.
        decoder_hidden: hidden width of the decoder MLP.
    """

    def __init__(self, feature_dim: int, latent_dim: int, decoder_hidden: int):
        super().__init__()
        self.to_mu = nn.Linear(feature_dim, latent_dim)
        self.to_log_var = nn.Linear(feature_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, decoder_hidden), nn.GELU(), nn.Linear(decoder_hidden, feature_dim)
        )

    def forward(self, global_feature: Tensor) -> LatentSample:
        """global_feature: (B, d_t) -> :class:`LatentSample`; samples only in training mode."""
        mu = self.to_mu(global_feature)
        log_var = self.to_log_var(global_feature)
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu) if self.training else mu
        return LatentSample(mu, log_var, z, self.decoder(z))


def reconstruction_loss(reconstruction: Tensor, global_feature: Tensor) -> Tensor:
    """Mean squared error between g_hat and g (Eq. 3); g is a target, it gets no gradient."""
    return F.mse_loss(reconstruction, global_feature.detach())
