"""Mixture of LoRA experts for MoECLIP: FOFS projections, experts, router, adapter.

One :class:`MoeAdapter` sits after one tapped transformer block and replaces
the hidden state the next block receives (spec "MoE module"):

    probs   = softmax(router(x))                          (N, K)
    weights = top-k of probs, renormalised to sum to 1     (Eq. 1)
    x'      = sum_n weights_n * (alpha/r) B_n A_n drop(x)  (Eq. 2)
    x_norm  = x' * ||x|| / (||x'|| + eps)                  (Eq. 4)
    out     = lambda * x_norm + (1 - lambda) * x           (Eq. 5)

Everything here works on plain tensors; nothing depends on CLIP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ...precision import float32_region
from ...tracing import is_compiling

Dispatch = Literal["dense", "sparse", "stacked", "auto"]
DISPATCHES = ("dense", "sparse", "stacked", "auto")


def resolve_dispatch(dispatch: str, device: torch.device) -> str:
    """"auto" -> "stacked" on GPUs (a few large matmuls beat per-expert gathers there) and
    under ``torch.compile`` (static shapes: the sparse gathers have data-dependent sizes),
    "sparse" elsewhere (only the chosen experts' FLOPs); other values unchanged."""
    if dispatch != "auto":
        return dispatch
    return "sparse" if device.type == "cpu" and not is_compiling() else "stacked"


def fofs_block_sizes(d: int, num_experts: int) -> list[int]:
    """Sizes of the K contiguous coordinate blocks of FOFS; they differ by at most 1.

    The first ``d % K`` blocks get one extra coordinate (d=10, K=3 -> [4, 3, 3]).
    """
    if num_experts < 1 or d < num_experts:
        raise ValueError(f"need 1 <= num_experts <= d, got num_experts={num_experts}, d={d}")
    base, extra = divmod(d, num_experts)
    return [base + (1 if n < extra else 0) for n in range(num_experts)]


def fofs_projections(
    d: int, num_experts: int, rank: int, generator: torch.Generator | None = None
) -> Tensor:
    """Frozen Orthogonal Feature Separation down-projections (Eq. 6).

    The ``d`` input coordinates are split into K contiguous blocks
    (:func:`fofs_block_sizes`). For expert n, ``C_n ~ N(0, 1)`` of shape
    (d_n, r) is drawn, ``Q_n`` is the orthonormal factor of its reduced QR, and
    ``A_n`` is zero except on the columns of block n, which hold ``Q_n^T``.
    Hence ``A_n A_n^T = I_r`` and ``A_n A_m^T = 0`` for n != m.

    Args:
        d: input width.
        num_experts: K.
        rank: r; every block must satisfy d_n >= r.
        generator: CPU random generator (pass a seeded one for reproducibility).

    Returns:
        (K, r, d) float32 tensor on the CPU.
    """
    sizes = fofs_block_sizes(d, num_experts)
    if min(sizes) < rank:
        raise ValueError(
            f"FOFS needs every block to hold at least rank={rank} coordinates, but "
            f"d={d} split into {num_experts} blocks gives sizes {sizes}"
        )
    projections = torch.zeros(num_experts, rank, d)
    start = 0
    for n, size in enumerate(sizes):
        gaussian = torch.randn(size, rank, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(gaussian, mode="reduced")  # (d_n, r), orthonormal columns
        projections[n, :, start : start + size] = q.T.to(torch.float32)
        start += size
    return projections


class LoraExperts(nn.Module):
    """K LoRA experts ``E_n(x) = (alpha / r) B_n A_n dropout(x)`` computed together.

    Args:
        d: token width (input and output).
        num_experts: K.
        rank: LoRA rank r.
        alpha: LoRA scaling numerator; the experts are scaled by ``alpha / rank``.
        dropout: dropout on the expert input (one mask shared by the experts; with
            FOFS the experts read disjoint coordinates, so this is equivalent to
            independent masks).
        fofs: True -> A is the frozen FOFS projection, a persistent buffer built
            from ``seed`` (give each MoE layer its own seed). False -> A is a
            trainable parameter with Kaiming-uniform init (ablation "w/o FOFS").
        full_rank: ablation: each expert is a full d x d linear map ``W_n``
            (zero-initialised, no alpha/r scaling) instead of ``B_n A_n``.
            Requires ``fofs=False``.
        seed: seed of the FOFS projections.

    Attributes:
        lora_a: (K, r, d) buffer (FOFS) or parameter; absent when ``full_rank``.
        lora_b: (K, d, r) zero-initialised parameter; absent when ``full_rank``.
        full_weight: (K, d, d) zero-initialised parameter, only when ``full_rank``.
    """

    def __init__(
        self,
        d: int,
        num_experts: int = 4,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        fofs: bool = True,
        full_rank: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if full_rank and fofs:
            raise ValueError("full_rank experts have no A matrix: set fofs=False")
        self.d = d
        self.num_experts = num_experts
        self.rank = rank
        self.full_rank = full_rank
        self.fofs = fofs
        self.scale = 1.0 if full_rank else alpha / rank
        self.dropout = nn.Dropout(dropout)
        if full_rank:
            self.full_weight = nn.Parameter(torch.zeros(num_experts, d, d))
            return
        if fofs:
            generator = torch.Generator().manual_seed(seed)
            self.register_buffer("lora_a", fofs_projections(d, num_experts, rank, generator))
        else:
            lora_a = torch.empty(num_experts, rank, d)
            for expert in lora_a:  # per expert so that fan_in = d
                nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
            self.lora_a = nn.Parameter(lora_a)
        self.lora_b = nn.Parameter(torch.zeros(num_experts, d, rank))

    def forward_dense(self, x: Tensor) -> Tensor:
        """All K experts on every token. x: (N, d) -> (N, K, d), scaled, before routing weights."""
        x = self.dropout(x)
        if self.full_rank:
            return torch.einsum("nd,ked->nke", x, self.full_weight)
        down = torch.einsum("nd,krd->nkr", x, self.lora_a)
        return torch.einsum("nkr,kdr->nkd", down, self.lora_b) * self.scale

    def forward_stacked(self, x: Tensor, dense_weight: Tensor) -> Tensor:
        """Routing-weighted sum of all K experts without forming each expert's output.

        The K down-projections run as one (d -> K r) matmul, the routing weights scale
        each expert's r coordinates, and one (K r -> d) matmul mixes them; equals
        ``einsum("nk,nkd->nd", dense_weight, forward_dense(x))`` (in eval mode).

        Args:
            x: (N, d) tokens.
            dense_weight: (N, K) routing weights, zero for unselected experts.

        Returns:
            (N, d).
        """
        if self.full_rank:
            return torch.einsum("nk,nkd->nd", dense_weight.to(x.dtype), self.forward_dense(x))
        x = self.dropout(x)
        num_experts, width, rank = self.lora_b.shape
        down = x @ self.lora_a.reshape(num_experts * rank, width).T  # (N, K r)
        down = down.unflatten(-1, (num_experts, rank)) * dense_weight.to(down.dtype).unsqueeze(-1)
        up = self.lora_b.transpose(1, 2).reshape(num_experts * rank, width)  # rows (k, r)
        return (down.flatten(1) @ up) * self.scale

    def expert(self, index: int, x: Tensor) -> Tensor:
        """Expert ``index`` alone on already-dropped-out tokens. x: (M, d) -> (M, d)."""
        if self.full_rank:
            return x @ self.full_weight[index].T
        return (x @ self.lora_a[index].T) @ self.lora_b[index].T * self.scale

    def forward_sparse(self, x: Tensor, expert_index: Tensor, weights: Tensor) -> Tensor:
        """Weighted sum of only the selected experts per token.

        Tokens are gathered per expert, run through that expert alone, weighted
        and added back with ``index_add_``; equals ``sum_j weights[:, j] *
        forward_dense(x)[:, expert_index[:, j]]`` (in eval mode).

        Args:
            x: (N, d) tokens.
            expert_index: (N, k) selected experts per token.
            weights: (N, k) their mixing weights.

        Returns:
            (N, d).
        """
        x = self.dropout(x)
        mixed = torch.zeros_like(x)
        for index in range(self.num_experts):
            token_ids, slot_ids = torch.nonzero(expert_index == index, as_tuple=True)
            if token_ids.numel() == 0:
                continue
            expert_out = self.expert(index, x[token_ids]) * weights[token_ids, slot_ids].unsqueeze(-1)
            mixed.index_add_(0, token_ids, expert_out.to(mixed.dtype))
        return mixed


@dataclass
class RoutingDecision:
    """Router output for N tokens and K experts, top-k kept.

    Attributes:
        logits: (N, K) router logits (after optional noise).
        probs: (N, K) full softmax over the K experts (feeds the balance loss).
        topk_index: (N, k) indices of the kept experts, by decreasing probability.
        topk_weight: (N, k) their probabilities renormalised to sum to 1 (Eq. 1).
        dense_weight: (N, K) ``topk_weight`` scattered into K slots (k non-zeros per row).
    """

    logits: Tensor
    probs: Tensor
    topk_index: Tensor
    topk_weight: Tensor
    dense_weight: Tensor


class TopKRouter(nn.Module):
    """Token-wise top-k router (Eq. 1).

    Args:
        d: token width.
        num_experts: K.
        top_k: k, 1 <= k <= K.
        hidden: None -> one bias-free ``Linear(d, K)``; an int -> router MLP
            ablation ``Linear(d, hidden) -> GELU -> Linear(hidden, K, bias=False)``.
        init_std: std of the normal init of the last (bias-free) layer. Small but
            non-zero so that the experts are not tied at step 0.
        noise_std_ratio: Tab. 11 robustness probe: when set (> 0), Gaussian noise
            ``N(0, (ratio * sigma)^2)`` is added to the logits in every mode, with
            ``sigma`` the (detached) std of each token's K logits. None = off.
    """

    def __init__(
        self,
        d: int,
        num_experts: int = 4,
        top_k: int = 2,
        hidden: int | None = None,
        init_std: float = 0.02,
        noise_std_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"need 1 <= top_k <= num_experts, got top_k={top_k}, K={num_experts}")
        if noise_std_ratio is not None and noise_std_ratio < 0:
            raise ValueError(f"noise_std_ratio must be >= 0, got {noise_std_ratio}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise_std_ratio = noise_std_ratio
        output = nn.Linear(d if hidden is None else hidden, num_experts, bias=False)
        nn.init.normal_(output.weight, mean=0.0, std=init_std)
        if hidden is None:
            self.gate = output
        else:
            self.gate = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), output)

    def forward(self, x: Tensor) -> RoutingDecision:
        """x: (N, d) -> :class:`RoutingDecision` for the N tokens."""
        logits = self.gate(x)
        if self.noise_std_ratio and self.num_experts > 1:
            sigma = logits.detach().std(dim=-1, keepdim=True)
            logits = logits + torch.randn_like(logits) * (self.noise_std_ratio * sigma)
        probs = logits.float().softmax(dim=-1)
        kept_probs, topk_index = probs.topk(self.top_k, dim=-1)
        topk_weight = kept_probs / kept_probs.sum(dim=-1, keepdim=True)
        dense_weight = torch.zeros_like(probs).scatter(-1, topk_index, topk_weight)
        return RoutingDecision(logits, probs, topk_index, topk_weight, dense_weight)


NormMatchGradient = Literal["bounded", "paper"]
NORM_MATCH_GRADIENTS = ("bounded", "paper")

# Below this ratio ||x'|| / ||x||, the bounded backward of the norm matching uses the gain
# it has at ||x'|| = GAIN_FLOOR * ||x||, i.e. at most 1 / GAIN_FLOOR (see match_norm).
GAIN_FLOOR = 1e-1


def match_norm(update: Tensor, reference: Tensor, eps: float = 1e-6, gradient: NormMatchGradient = "paper") -> Tensor:
    """Rescale each token of ``update`` to the norm of ``reference`` (Eq. 4).

    Forward, for both ``gradient`` modes and bit for bit the same:
    ``update * ||reference|| / (||update|| + eps)`` over the last dim. A zero update stays
    zero.

    Backward: with ``n = ||update||``, ``r = ||reference||``, the exact gradient with
    respect to ``update`` is ``r / (n + eps) * (g - (u.g) u * n / (n + eps))`` (u the unit
    update). Its gain ``r / (n + eps)`` is about ``r / eps`` (~10^6 r) at the zero update
    of initialisation, where LoRA B = 0.
    - "paper": that exact gradient (plain autograd). B's first gradient is then ~10^4 times
      its later ones and fills Adam's second moment, which stalls B for ~10^4 steps.
    - "bounded": the gain is ``r / max(n + eps, GAIN_FLOOR * r)``: exact wherever
      ``n >= GAIN_FLOOR * r`` (minus eps), and never above ``1 / GAIN_FLOOR``. Where it
      bites, only the length of the gradient changes, not its direction. The gradient with
      respect to ``reference`` is exact in both modes. Stateless: nothing to save or resume.

    Shapes (..., d); compute in float32 (the caller casts).
    """
    if gradient == "paper":
        update_norm = torch.linalg.vector_norm(update, dim=-1, keepdim=True)
        reference_norm = torch.linalg.vector_norm(reference, dim=-1, keepdim=True)
        return update * (reference_norm / (update_norm + eps))
    if gradient == "bounded":
        return _BoundedNormMatch.apply(update, reference, eps)
    raise ValueError(f"norm-matching gradient must be one of {NORM_MATCH_GRADIENTS}, got {gradient!r}")


class _BoundedNormMatch(torch.autograd.Function):
    """Eq. 4 with the bounded-gain backward of :func:`match_norm` ("bounded")."""

    @staticmethod
    def forward(ctx, update: Tensor, reference: Tensor, eps: float) -> Tensor:
        update_norm = torch.linalg.vector_norm(update, dim=-1, keepdim=True)
        reference_norm = torch.linalg.vector_norm(reference, dim=-1, keepdim=True)
        ctx.save_for_backward(update, reference, update_norm, reference_norm)
        ctx.eps = eps
        return update * (reference_norm / (update_norm + eps))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        update, reference, update_norm, reference_norm = ctx.saved_tensors
        shifted = update_norm + ctx.eps  # n + eps >= eps > 0
        along = (update * grad).sum(dim=-1, keepdim=True) / shifted  # (u.g) n / (n + eps)
        grad_update = grad_reference = None
        if ctx.needs_input_grad[0]:
            unit = update / torch.where(update_norm > 0, update_norm, torch.ones_like(update_norm))  # 0 at 0
            gain = reference_norm / torch.maximum(shifted, GAIN_FLOOR * reference_norm)
            grad_update = gain * (grad - along * unit)
        if ctx.needs_input_grad[1]:
            safe_reference_norm = torch.where(reference_norm > 0, reference_norm, torch.ones_like(reference_norm))
            grad_reference = along * reference / safe_reference_norm
        return grad_update, grad_reference, None


def blend_matched(update: Tensor, reference: Tensor, lambda_moe: float, eps: float = 1e-6) -> Tensor:
    """Eq. 4 + 5 without autograd: ``lambda * match_norm(update, reference) + (1 - lambda) * reference``
    as one per-token coefficient and one fused multiply-add (inference; no intermediate
    (N, d) tensors but the result). update may be bf16: its norm and the blend run in
    float32. Shapes (..., d) -> float32 (..., d)."""
    update_norm = torch.linalg.vector_norm(update, dim=-1, keepdim=True, dtype=torch.float32)
    reference = reference.float()
    reference_norm = torch.linalg.vector_norm(reference, dim=-1, keepdim=True)
    coefficient = lambda_moe * reference_norm / (update_norm + eps)  # (..., 1)
    return torch.addcmul(reference * (1.0 - lambda_moe), update, coefficient)


@dataclass
class MoeOutput:
    """Output of :class:`MoeAdapter` for a (B, T, d) hidden state with K experts.

    Attributes:
        hidden: (B, T, d) adapted hidden state (Eq. 5).
        router_probs: (B, T, K) full router softmax (balance loss, analyses).
        topk_index: (B, T, k) selected experts per token.
        topk_weight: (B, T, k) their renormalised weights.
        expert_outputs: (B, T, K, d) every expert's scaled output before the routing
            weights (ETF loss); None under sparse and stacked dispatch.
    """

    hidden: Tensor
    router_probs: Tensor
    topk_index: Tensor
    topk_weight: Tensor
    expert_outputs: Tensor | None


class MoeAdapter(nn.Module):
    """One MoECLIP MoE module for one tapped block (router + LoRA experts + Eq. 4, 5).

    Dispatch: in training mode, or when ``dispatch == "dense"``, all K experts run
    on every token and ``expert_outputs`` is returned (the ETF loss needs it);
    in eval mode with ``dispatch == "sparse"`` (default) only the k selected
    experts run per token; ``"stacked"`` runs all experts as two matmuls without
    per-expert outputs; ``"auto"`` is stacked on GPUs, sparse on the CPU. All give
    the same ``hidden``.

    Args:
        d: token width.
        num_experts: K (K = 1, top_k = 1 is the single-expert ablation).
        top_k: k.
        rank, alpha, dropout, fofs, full_rank, seed: see :class:`LoraExperts`.
        lambda_moe: residual weight of the adapted feature (Eq. 5).
        eps: norm-matching constant (Eq. 4).
        norm_match_gradient: backward of the norm matching, "bounded" (default) or
            "paper"; the forward is the same (see :func:`match_norm`).
        router_hidden, router_init_std, noise_std_ratio: see :class:`TopKRouter`.
        dispatch: "sparse", "dense", "stacked" or "auto" expert evaluation outside
            training (see :func:`resolve_dispatch`).
    """

    def __init__(
        self,
        d: int,
        num_experts: int = 4,
        top_k: int = 2,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        lambda_moe: float = 0.1,
        eps: float = 1e-6,
        fofs: bool = True,
        full_rank: bool = False,
        seed: int = 0,
        router_hidden: int | None = None,
        router_init_std: float = 0.02,
        noise_std_ratio: float | None = None,
        dispatch: Dispatch = "sparse",
        norm_match_gradient: NormMatchGradient = "bounded",
    ) -> None:
        super().__init__()
        if norm_match_gradient not in NORM_MATCH_GRADIENTS:
            raise ValueError(f"norm_match_gradient must be one of {NORM_MATCH_GRADIENTS}, got {norm_match_gradient!r}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        if not 0.0 <= lambda_moe <= 1.0:
            raise ValueError(f"lambda_moe must lie in [0, 1], got {lambda_moe}")
        self.lambda_moe = lambda_moe
        self.eps = eps
        self.dispatch = dispatch
        self.norm_match_gradient = norm_match_gradient
        self.router = TopKRouter(d, num_experts, top_k, router_hidden, router_init_std, noise_std_ratio)
        self.experts = LoraExperts(d, num_experts, rank, alpha, dropout, fofs, full_rank, seed)

    def forward(self, hidden: Tensor) -> MoeOutput:
        """hidden: (B, T, d) -> :class:`MoeOutput`."""
        batch, tokens, width = hidden.shape
        x = hidden.reshape(batch * tokens, width)
        decision = self.router(x)
        dispatch = "dense" if self.training else resolve_dispatch(self.dispatch, hidden.device)
        expert_outputs = None
        if dispatch == "dense":
            expert_outputs = self.experts.forward_dense(x)  # (N, K, d)
            mixed = torch.einsum("nk,nkd->nd", decision.dense_weight.to(expert_outputs.dtype), expert_outputs)
        elif dispatch == "stacked":
            mixed = self.experts.forward_stacked(x, decision.dense_weight)
        else:
            mixed = self.experts.forward_sparse(x, decision.topk_index, decision.topk_weight)
        # Norm matching in float32: the rescale divides by a norm that is 0 at init.
        with float32_region(x.device):
            if torch.is_grad_enabled() and (mixed.requires_grad or x.requires_grad):
                normalised = match_norm(mixed.float(), x.float(), self.eps, self.norm_match_gradient)
                out = self.lambda_moe * normalised + (1.0 - self.lambda_moe) * x.float()
            else:
                out = blend_matched(mixed, x, self.lambda_moe, self.eps)

        def unflatten(t: Tensor) -> Tensor:
            return t.reshape(batch, tokens, *t.shape[1:])

        return MoeOutput(
            hidden=unflatten(out.to(hidden.dtype)),
            router_probs=unflatten(decision.probs),
            topk_index=unflatten(decision.topk_index),
            topk_weight=unflatten(decision.topk_weight),
            expert_outputs=None if expert_outputs is None else unflatten(expert_outputs),
        )
