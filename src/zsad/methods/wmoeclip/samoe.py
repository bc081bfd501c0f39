"""Semantic-Aware Mixture-of-Experts (SA-MoE, spec Eq. 8): one routing decision per image.

    c_l = GAP_tokens(Linear_l(patch tokens of layer l))      (B, d_a) per tapped layer
    c   = [c_1, ..., c_n]                                     (B, n d_a)
    top-k of softmax(router(c)), renormalised -> w           (B, k)
    f   = sum_j w_j E_j(c),   f' = f + g                      (B, d_t)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..base import Routing
from ..moeclip.moe import TopKRouter


class ContextAdapters(nn.Module):
    """Per tapped layer a Linear(d, d_a) on the raw patch tokens, mean over tokens, concatenated.

    Args:
        width: d, the visual token width.
        adapter_dim: d_a.
        num_layers: tapped layers n.
    """

    def __init__(self, width: int, adapter_dim: int, num_layers: int):
        super().__init__()
        self.adapters = nn.ModuleList(nn.Linear(width, adapter_dim) for _ in range(num_layers))

    def forward(self, layer_tokens: Sequence[Tensor]) -> Tensor:
        """layer_tokens: n tensors (B, L, d) -> context c (B, n d_a)."""
        if len(layer_tokens) != len(self.adapters):
            raise ValueError(f"{len(layer_tokens)} layers given, the adapters expect {len(self.adapters)}")
        return torch.cat([adapter(tokens).mean(dim=1) for adapter, tokens in zip(self.adapters, layer_tokens)], dim=-1)


class SemanticMoE(nn.Module):
    """Top-k router over K MLP experts (Linear-GELU-Linear) on the context vector.

    Args:
        context_dim: n d_a.
        output_dim: d_t.
        num_experts, top_k: K, k.
        hidden: hidden width of each expert.
    """

    def __init__(self, context_dim: int, output_dim: int, num_experts: int, top_k: int, hidden: int):
        super().__init__()
        self.router = TopKRouter(context_dim, num_experts, top_k)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(context_dim, hidden), nn.GELU(), nn.Linear(hidden, output_dim))
            for _ in range(num_experts)
        )

    def forward(self, context: Tensor) -> tuple[Tensor, Routing]:
        """context: (B, n d_a) -> (f (B, d_t), routing of one token per image: L = 1, grid
        (1, 1), expert outputs (B, 1, K, d_t) kept). Every expert runs on every image (K
        small MLPs on B vectors); only the k kept ones carry weight."""
        decision = self.router(context)
        outputs = torch.stack([expert(context) for expert in self.experts], dim=1)  # (B, K, d_t)
        mixed = torch.einsum("bk,bkd->bd", decision.dense_weight.to(outputs.dtype), outputs)
        routing = Routing(
            probabilities=decision.probs.unsqueeze(1),
            topk_index=decision.topk_index.unsqueeze(1),
            topk_weight=decision.topk_weight.unsqueeze(1),
            expert_outputs=outputs.unsqueeze(1),
            grid=(1, 1),
        )
        return mixed, routing
