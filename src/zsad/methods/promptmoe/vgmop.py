"""Visually-guided mixture of prompts (VGMoP, paper Eq. 2, 3) and its parts.

Per prompt module (one per tapped layer by default):

    r       = mean over queries of MHA(q, K = F W_K, V = F W_V)      (Eq. 2)
    z       = router(r)                       (B, E) logits, one router per pool
    p       = softmax(z)                      full distribution (balance loss)
    w       = softmax(top-k of z)             (B, k), sums to 1
    S_agg   = sum_i w_i s_top,i               (B, M, D)               (Eq. 3)

for a normal pool (experts of M_n tokens) and an abnormal pool (M_a tokens). Everything
here works on plain tensors; nothing depends on CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Routing


@dataclass
class PoolRouting:
    """Routing decisions of one expert pool for a batch of B images.

    probabilities: (B, E) full softmax of the router logits.
    topk_index: (B, k) the kept experts, by decreasing logit.
    topk_weight: (B, k) softmax over the kept logits (sums to 1 per image).
    """

    probabilities: torch.Tensor
    topk_index: torch.Tensor
    topk_weight: torch.Tensor

    def as_routing(self) -> Routing:
        """The kit's typed routing: one routed "token" per image (L = 1, grid (1, 1))."""
        return Routing(
            probabilities=self.probabilities.unsqueeze(1),
            topk_index=self.topk_index.unsqueeze(1),
            topk_weight=self.topk_weight.unsqueeze(1),
            expert_outputs=None,
            grid=(1, 1),
        )

    def dense_weights(self) -> torch.Tensor:
        """(B, E) mixture weights: topk_weight at the kept experts, 0 elsewhere."""
        weights = torch.zeros_like(self.probabilities)
        return weights.scatter(1, self.topk_index, self.topk_weight.to(weights.dtype))


def sparse_routing(logits: torch.Tensor, top_k: int) -> PoolRouting:
    """Top-k routing of router logits (B, E): keep the k largest logits and renormalise
    them with a softmax over the kept ones."""
    if not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in 1..{logits.shape[-1]}, got {top_k}")
    kept, index = logits.topk(top_k, dim=-1)
    return PoolRouting(probabilities=logits.softmax(dim=-1), topk_index=index, topk_weight=kept.softmax(dim=-1))


class QueryAttention(nn.Module):
    """Learnable queries read the visual tokens by multi-head cross-attention (Eq. 2).

    visual_dim: d_x of the visual tokens; token_dim: D, the text token width.
    forward: (B, T, d_x) visual tokens -> (B, D) routing representation r, the mean of
    the N_q attention outputs. Queries enter unprojected; keys and values are bias-free
    linear maps d_x -> D, split into ``heads`` heads.
    """

    def __init__(self, visual_dim: int, token_dim: int, num_queries: int, heads: int, init_std: float):
        super().__init__()
        if token_dim % heads:
            raise ValueError(f"the token width {token_dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(num_queries, token_dim) * init_std)
        self.key = nn.Linear(visual_dim, token_dim, bias=False)
        self.value = nn.Linear(visual_dim, token_dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, D / heads)."""
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        batch = visual.shape[0]
        queries = self._split(self.queries.to(visual.dtype).expand(batch, -1, -1))
        attended = F.scaled_dot_product_attention(queries, self._split(self.key(visual)), self._split(self.value(visual)))
        return attended.transpose(1, 2).flatten(2).mean(dim=1)


class ExpertPool(nn.Module):
    """E expert prompts of M learned tokens each, with an optional router.

    experts: (E, M, D) parameter, or None for a router that mixes another pool's experts
    (``length`` None; a shared pool, Tab. 5). With ``router_hidden`` the pool has a
    Linear(D, hidden) - ReLU - Linear(hidden, E) router and mixes its top-k experts per
    image; without, it has no router (static prompts).
    """

    def __init__(
        self, num_experts: int, length: int | None, token_dim: int, init_std: float,
        top_k: int = 1, router_hidden: int | None = None,
    ):
        super().__init__()
        self.top_k = top_k
        self.experts = (
            nn.Parameter(torch.randn(num_experts, length, token_dim) * init_std) if length is not None else None
        )
        self.router = (
            nn.Sequential(nn.Linear(token_dim, router_hidden), nn.ReLU(), nn.Linear(router_hidden, num_experts))
            if router_hidden is not None
            else None
        )

    @property
    def num_experts(self) -> int:
        return self.router[-1].out_features if self.experts is None else self.experts.shape[0]

    def route(self, representation: torch.Tensor) -> PoolRouting:
        """(B, D) routing representation -> the pool's top-k routing."""
        if self.router is None:
            raise RuntimeError("this expert pool has no router (static prompts)")
        return sparse_routing(self.router(representation), self.top_k)

    def mix(self, routing: PoolRouting, experts: torch.Tensor | None = None) -> torch.Tensor:
        """S_agg (Eq. 3): (B, M, D) weighted sum of the kept experts (of ``experts``
        (E, M, D) when given: another pool's, shared)."""
        experts = self.experts if experts is None else experts
        weights = routing.dense_weights().to(experts.dtype)
        return torch.einsum("be,emd->bmd", weights, experts)

    def mean_directions(self) -> torch.Tensor:
        """(E, D) L2-normalised mean token of each expert (the rows of Ŝ in Eq. 5)."""
        return F.normalize(self.experts.mean(dim=1), dim=-1)


@dataclass
class MixedStates:
    """One VGMoP module's output for a batch: normal (B, M_n, D) and abnormal (B, M_a, D)
    aggregated states, and the routing of each pool keyed ``normal`` / ``abnormal``."""

    normal: torch.Tensor
    abnormal: torch.Tensor
    routing: dict[str, PoolRouting]


class VGMoP(nn.Module):
    """Query attention over one layer's visual tokens, and a routed normal and abnormal pool.

    shared_attention: one query cross-attention (``attention``) gives both routers their
    representation; otherwise the abnormal branch has its own (``abnormal_attention``).
    shared_pool: the normal pool holds E experts of max(M_n, M_a) tokens and the abnormal
    pool only a router into them; each branch takes the first M tokens of its mixture.
    forward: (B, T, d_x) visual context (patch features and the global feature) ->
    :class:`MixedStates`.
    """

    def __init__(
        self, visual_dim: int, token_dim: int, num_experts: int, top_k: int, num_queries: int, heads: int,
        router_hidden: int, normal_length: int, abnormal_length: int, init_std: float,
        shared_attention: bool = True, shared_pool: bool = False,
    ):
        super().__init__()
        self.lengths = {"normal": normal_length, "abnormal": abnormal_length}
        self.shared_pool = shared_pool
        self.attention = QueryAttention(visual_dim, token_dim, num_queries, heads, init_std)
        self.abnormal_attention = (
            None if shared_attention else QueryAttention(visual_dim, token_dim, num_queries, heads, init_std)
        )
        own_lengths = (
            {"normal": max(normal_length, abnormal_length), "abnormal": None} if shared_pool else self.lengths
        )
        self.pools = nn.ModuleDict({
            name: ExpertPool(num_experts, length, token_dim, init_std, top_k, router_hidden)
            for name, length in own_lengths.items()
        })

    def forward(self, visual: torch.Tensor) -> MixedStates:
        representation = self.attention(visual)
        representations = {
            "normal": representation,
            "abnormal": representation if self.abnormal_attention is None else self.abnormal_attention(visual),
        }
        routing = {name: pool.route(representations[name]) for name, pool in self.pools.items()}
        shared = self.pools["normal"].experts if self.shared_pool else None
        states = {
            name: pool.mix(routing[name], shared)[:, : self.lengths[name]] for name, pool in self.pools.items()
        }
        return MixedStates(normal=states["normal"], abnormal=states["abnormal"], routing=routing)


class StaticPools(nn.Module):
    """A normal and an abnormal pool of static expert prompts, no router (Tab. 2 "static
    prompt" with E = 1, "static ensemble" with E > 1)."""

    def __init__(self, token_dim: int, num_experts: int, normal_length: int, abnormal_length: int, init_std: float):
        super().__init__()
        self.pools = nn.ModuleDict({
            "normal": ExpertPool(num_experts, normal_length, token_dim, init_std),
            "abnormal": ExpertPool(num_experts, abnormal_length, token_dim, init_std),
        })
