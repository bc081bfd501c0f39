"""Auxiliary MoE losses of MoECLIP: simplex-ETF expert loss and CV^2 balance loss.

Both are per MoE layer; the model sums them over layers and weights them
(0.01 each in the paper). They must be computed in training mode, where
:class:`~zsad.methods.moeclip.moe.MoeAdapter` returns the dense expert outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...precision import float32_region


def ideal_etf_gram(num_experts: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(K, K) Gram matrix of a simplex ETF (Eq. 3): 1 on the diagonal, -1/(K-1) off it."""
    if num_experts < 2:
        raise ValueError(f"a simplex ETF needs K >= 2, got {num_experts}")
    off_diagonal = -1.0 / (num_experts - 1)
    gram = torch.full((num_experts, num_experts), off_diagonal, device=device, dtype=dtype)
    gram.fill_diagonal_(1.0)
    return gram


def etf_loss(expert_outputs: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean squared distance of each token's expert Gram matrix to the simplex ETF (Eq. 7, 8).

    Each expert output is L2-normalised (``F.normalize`` with ``eps``), the K x K
    Gram matrix is formed per token, and ``(G - G_ideal)^2`` is averaged over the
    tokens and the K^2 entries.

    K = 1: a single expert has nothing to be separated from (its Gram matrix is
    the 1 x 1 identity, equal to the ideal), so the loss is 0; it is returned as
    ``0 * expert_outputs.sum()`` so that it stays connected to the graph.

    Args:
        expert_outputs: (B, T, K, d) or (N, K, d) expert outputs before routing weights.
        eps: normalisation floor; keeps the gradient finite for all-zero outputs.

    Returns:
        Scalar tensor.
    """
    if expert_outputs.dim() < 3:
        raise ValueError(f"expert_outputs must be (..., K, d), got shape {tuple(expert_outputs.shape)}")
    num_experts, width = expert_outputs.shape[-2:]
    if num_experts == 1:
        return expert_outputs.sum() * 0.0
    with float32_region(expert_outputs.device):  # norms and Gram in float32 under autocast
        unit = F.normalize(expert_outputs.reshape(-1, num_experts, width).float(), dim=-1, eps=eps)
        gram = unit @ unit.transpose(1, 2)  # (N, K, K)
    ideal = ideal_etf_gram(num_experts, device=gram.device, dtype=gram.dtype)
    return (gram - ideal).pow(2).mean()


def balance_loss(router_probs: Tensor, eps: float = 1e-6) -> Tensor:
    """Squared coefficient of variation of the expert load (Eq. 9, supp. B.1).

    ``load = sum over all tokens of the full softmax probabilities`` (K,), then
    ``CV^2 = var(load) / (mean(load)^2 + eps)`` with the unbiased variance.
    K = 1: the load is trivially balanced; returns ``0 * router_probs.sum()``.

    Args:
        router_probs: (B, T, K) or (N, K) full router softmax (before top-k).
        eps: stabiliser of the denominator.

    Returns:
        Scalar tensor.
    """
    num_experts = router_probs.shape[-1]
    if num_experts == 1:
        return router_probs.sum() * 0.0
    load = router_probs.reshape(-1, num_experts).float().sum(dim=0)
    return load.var(unbiased=True) / (load.mean().pow(2) + eps)
