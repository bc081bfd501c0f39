"""Auxiliary losses of PromptMoE, unweighted and per expert pool (the model sums them
over layers and pools and weights them with alpha and beta)."""
from __future__ import annotations

import torch


def balance_loss(probabilities: torch.Tensor) -> torch.Tensor:
    """Load balance of one pool (Eq. 4 without alpha): ``E * sum_j (mean_i p_ij)^2``.

    probabilities: (B, E) full router softmax of a batch. By Cauchy-Schwarz the value is
    at least 1, reached exactly when the batch-mean routing is uniform; it is E when all
    images put their whole mass on one expert.
    """
    if probabilities.dim() != 2:
        raise ValueError(f"probabilities must be (B, E), got {tuple(probabilities.shape)}")
    num_experts = probabilities.shape[1]
    return num_experts * probabilities.float().mean(dim=0).pow(2).sum()


def decoupling_loss(directions: torch.Tensor) -> torch.Tensor:
    """Expert decoupling of one pool (Eq. 5 without beta): ``||Ŝ Ŝ^T - I_E||_F^2``.

    directions: (E, D) L2-normalised mean token of each expert (rows of Ŝ). Zero exactly
    when the rows are orthonormal.
    """
    if directions.dim() != 2:
        raise ValueError(f"directions must be (E, D), got {tuple(directions.shape)}")
    directions = directions.float()
    gram = directions @ directions.T
    identity = torch.eye(directions.shape[0], device=directions.device, dtype=directions.dtype)
    return (gram - identity).pow(2).sum()
