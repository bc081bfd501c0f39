"""Tests of the MoECLIP mixture of LoRA experts and its auxiliary losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from zsad.methods.moeclip.aux_losses import balance_loss, etf_loss, ideal_etf_gram
from zsad.methods.moeclip.moe import (
    LoraExperts,
    MoeAdapter,
    TopKRouter,
    blend_matched,
    fofs_block_sizes,
    fofs_projections,
    match_norm,
    resolve_dispatch,
)


def _randomise_b(adapter: MoeAdapter, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        b = adapter.experts.lora_b
        b.copy_(torch.randn(b.shape, generator=generator))


def _hidden(batch: int = 2, tokens: int = 5, d: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, tokens, d, generator=torch.Generator().manual_seed(seed)) * 3


# ---------------------------------------------------------------- FOFS


@pytest.mark.parametrize(("d", "num_experts", "rank"), [(32, 4, 8), (10, 3, 2), (1024, 4, 8)])
def test_fofs_projections_are_orthonormal_and_mutually_orthogonal(d, num_experts, rank):
    projections = fofs_projections(d, num_experts, rank, torch.Generator().manual_seed(0))
    assert projections.shape == (num_experts, rank, d)
    cross = torch.einsum("nrd,msd->nmrs", projections, projections)  # A_n A_m^T
    for n in range(num_experts):
        for m in range(num_experts):
            expected = torch.eye(rank) if n == m else torch.zeros(rank, rank)
            assert torch.allclose(cross[n, m], expected, atol=1e-5), (n, m)


def test_fofs_blocks_are_contiguous_and_balanced():
    assert fofs_block_sizes(10, 3) == [4, 3, 3]
    assert fofs_block_sizes(1024, 4) == [256] * 4
    assert fofs_block_sizes(1026, 4) == [257, 257, 256, 256]
    assert fofs_block_sizes(11, 4) == [3, 3, 3, 2]
    projections = fofs_projections(10, 3, 2, torch.Generator().manual_seed(0))
    support = projections.abs().sum(dim=1) > 0  # (K, d): columns each expert reads
    expected = torch.zeros(3, 10, dtype=torch.bool)
    expected[0, 0:4], expected[1, 4:7], expected[2, 7:10] = True, True, True
    assert torch.equal(support, expected)


def test_fofs_rejects_blocks_smaller_than_rank():
    with pytest.raises(ValueError, match="rank"):
        fofs_projections(10, 3, 4)  # blocks [4, 3, 3] < rank 4


def test_fofs_is_reproducible_from_the_seed():
    first = LoraExperts(32, 4, 4, seed=7).lora_a
    assert torch.equal(first, LoraExperts(32, 4, 4, seed=7).lora_a)
    assert not torch.equal(first, LoraExperts(32, 4, 4, seed=8).lora_a)


def test_fofs_a_is_a_frozen_persistent_buffer():
    adapter = MoeAdapter(16, num_experts=4, top_k=2, rank=2)
    experts = adapter.experts
    assert "lora_a" in dict(experts.named_buffers())
    assert "lora_a" not in dict(experts.named_parameters())
    assert not experts.lora_a.requires_grad
    assert "experts.lora_a" in adapter.state_dict()
    trainable = {name for name, p in adapter.named_parameters() if p.requires_grad}
    assert trainable == {"router.gate.weight", "experts.lora_b"}
    # A restored state dict brings the projections back.
    other = MoeAdapter(16, num_experts=4, top_k=2, rank=2, seed=99)
    assert not torch.equal(other.experts.lora_a, experts.lora_a)
    other.load_state_dict(adapter.state_dict())
    assert torch.equal(other.experts.lora_a, experts.lora_a)


def test_without_fofs_a_is_trainable_and_not_orthogonal_blocks():
    experts = LoraExperts(16, 4, 2, fofs=False)
    assert isinstance(experts.lora_a, torch.nn.Parameter) and experts.lora_a.requires_grad
    assert (experts.lora_a != 0).all()  # dense, not block-structured
    bound = 1 / 16**0.5  # kaiming_uniform(a=sqrt(5)) with fan_in = d
    assert experts.lora_a.abs().max() <= bound


def test_full_rank_requires_fofs_off_and_matches_dense():
    with pytest.raises(ValueError):
        LoraExperts(8, 2, 2, full_rank=True)
    experts = LoraExperts(8, 2, 2, fofs=False, full_rank=True).eval()
    assert torch.count_nonzero(experts.full_weight) == 0
    with torch.no_grad():
        experts.full_weight.normal_()
    x = torch.randn(3, 8)
    dense = experts.forward_dense(x)
    assert torch.allclose(dense[:, 1], x @ experts.full_weight[1].T, atol=1e-5)


# ---------------------------------------------------------------- router


@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 2), (4, 1), (4, 4), (1, 1), (6, 3)])
def test_router_weights_sum_to_one_with_exactly_k_nonzeros(num_experts, top_k):
    router = TopKRouter(16, num_experts, top_k)
    decision = router(torch.randn(50, 16))
    assert decision.probs.shape == (50, num_experts)
    assert torch.allclose(decision.probs.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.allclose(decision.topk_weight.sum(-1), torch.ones(50), atol=1e-6)
    assert torch.equal((decision.dense_weight != 0).sum(-1), torch.full((50,), top_k))
    # Eq. 1: kept weights are the kept probabilities renormalised.
    kept = decision.probs.gather(-1, decision.topk_index)
    assert torch.allclose(decision.topk_weight, kept / kept.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(decision.dense_weight.gather(-1, decision.topk_index), decision.topk_weight)


def test_router_init_is_small_random_not_zero():
    torch.manual_seed(0)
    gate = TopKRouter(1024, 4, 2).gate
    assert gate.bias is None
    assert gate.weight.shape == (4, 1024)
    assert (gate.weight != 0).float().mean() > 0.99
    assert 0.015 < gate.weight.std().item() < 0.025


def test_router_top_k_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        TopKRouter(8, 4, 5)


def test_router_mlp_ablation_and_logit_noise():
    router = TopKRouter(16, 4, 2, hidden=32)
    assert len(router.gate) == 3
    x = torch.randn(200, 16)
    clean = TopKRouter(16, 4, 2)
    noisy = TopKRouter(16, 4, 2, noise_std_ratio=1.0)
    noisy.load_state_dict(clean.state_dict())
    torch.manual_seed(0)
    assert torch.equal(clean(x).logits, clean(x).logits)  # no noise unless asked
    difference = noisy(x).logits - clean(x).logits
    sigma = clean(x).logits.std(dim=-1, keepdim=True)
    ratio = (difference / sigma).std().item()
    assert 0.8 < ratio < 1.2  # noise std is alpha * sigma, alpha = 1


# ---------------------------------------------------------------- adapter


@pytest.mark.parametrize(("num_experts", "top_k"), [(4, 2), (4, 1), (4, 4), (3, 2), (1, 1)])
def test_sparse_dispatch_equals_dense_dispatch(num_experts, top_k):
    torch.manual_seed(0)
    adapter = MoeAdapter(16, num_experts=num_experts, top_k=top_k, rank=2).eval()
    _randomise_b(adapter)
    hidden = _hidden()
    sparse = adapter(hidden)
    adapter.dispatch = "stacked"
    stacked = adapter(hidden)
    adapter.dispatch = "dense"
    dense = adapter(hidden)
    assert sparse.expert_outputs is None and stacked.expert_outputs is None
    assert dense.expert_outputs.shape == (2, 5, num_experts, 16)
    assert torch.allclose(sparse.hidden, dense.hidden, atol=1e-5)
    assert torch.allclose(stacked.hidden, dense.hidden, atol=1e-5)
    assert not torch.allclose(sparse.hidden, 0.9 * hidden, atol=1e-3)  # experts really contribute
    # Mixed expert output by hand from the dense outputs.
    x = hidden.reshape(-1, 16)
    index = sparse.topk_index.reshape(-1, top_k)
    weight = sparse.topk_weight.reshape(-1, top_k)
    mixture = adapter.experts.forward_sparse(x, index, weight)
    selected = dense.expert_outputs.reshape(-1, num_experts, 16).gather(1, index.unsqueeze(-1).expand(-1, -1, 16))
    by_hand = (selected * weight.unsqueeze(-1)).sum(1)
    assert torch.allclose(mixture, by_hand, atol=1e-5)


@pytest.mark.parametrize("full_rank", [False, True])
def test_stacked_experts_equal_the_weighted_sum_of_dense_outputs(full_rank):
    torch.manual_seed(1)
    experts = LoraExperts(12, num_experts=3, rank=2, fofs=not full_rank, full_rank=full_rank).eval()
    with torch.no_grad():
        for parameter in experts.parameters():
            parameter.normal_()
    x = torch.randn(7, 12)
    weight = torch.rand(7, 3)
    by_hand = (weight.unsqueeze(-1) * experts.forward_dense(x)).sum(1)
    assert torch.allclose(experts.forward_stacked(x, weight), by_hand, atol=1e-4)


def test_auto_dispatch_is_sparse_on_cpu_and_stacked_on_gpus():
    assert resolve_dispatch("auto", torch.device("cpu")) == "sparse"
    assert resolve_dispatch("auto", torch.device("cuda", 0)) == "stacked"
    assert resolve_dispatch("dense", torch.device("cuda", 0)) == "dense"
    with pytest.raises(ValueError, match="dispatch must be one of"):
        MoeAdapter(16, dispatch="gather")


def test_training_mode_always_dispatches_densely():
    adapter = MoeAdapter(16, rank=2).train()
    assert adapter.dispatch == "sparse"
    assert adapter(_hidden()).expert_outputs is not None
    adapter.eval()
    assert adapter(_hidden()).expert_outputs is None


def test_norm_matching_keeps_each_token_norm():
    update = torch.randn(4, 7, 16) * 0.01
    reference = torch.randn(4, 7, 16) * 5
    matched = match_norm(update, reference)
    assert torch.allclose(matched.norm(dim=-1), reference.norm(dim=-1), rtol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(matched, update, dim=-1)
    assert torch.allclose(cosine, torch.ones(4, 7), atol=1e-5)  # direction kept
    # Through the adapter: lambda_moe = 1 leaves only the norm-matched mixture.
    adapter = MoeAdapter(16, rank=2, lambda_moe=1.0).eval()
    _randomise_b(adapter)
    hidden = _hidden()
    assert torch.allclose(adapter(hidden).hidden.norm(dim=-1), hidden.norm(dim=-1), rtol=1e-4)


def test_zero_b_at_init_gives_scaled_identity_and_finite_gradients():
    adapter = MoeAdapter(16, rank=2, lambda_moe=0.1).train()
    hidden = _hidden().requires_grad_(True)
    out = adapter(hidden)
    assert torch.allclose(out.hidden, 0.9 * hidden, atol=1e-6)
    loss = out.hidden.pow(2).mean() + etf_loss(out.expert_outputs) + balance_loss(out.router_probs)
    loss.backward()
    grads = [adapter.experts.lora_b.grad, adapter.router.gate.weight.grad, hidden.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert adapter.experts.lora_b.grad.abs().sum() > 0  # B does learn from step 0
    assert adapter.experts.lora_a.grad is None


def test_single_expert_ablation_runs():
    adapter = MoeAdapter(16, num_experts=1, top_k=1, rank=2).train()
    _randomise_b(adapter)
    out = adapter(_hidden())
    assert torch.equal(out.topk_index, torch.zeros(2, 5, 1, dtype=torch.long))
    assert torch.allclose(out.topk_weight, torch.ones(2, 5, 1))
    loss = etf_loss(out.expert_outputs) + balance_loss(out.router_probs)
    assert loss.item() == 0.0
    loss.backward()  # the zero losses stay connected to the graph


def test_parameter_count():
    """One MoECLIP MoE module at ViT-L width: router 1024*4 + B 4*1024*8 = 36,864."""
    adapter = MoeAdapter(1024, num_experts=4, top_k=2, rank=8)
    trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    assert trainable == 1024 * 4 + 4 * 1024 * 8 == 36_864
    without_fofs = MoeAdapter(1024, num_experts=4, top_k=2, rank=8, fofs=False)
    assert sum(p.numel() for p in without_fofs.parameters() if p.requires_grad) == 36_864 + 4 * 8 * 1024


def test_invalid_dispatch_is_an_error():
    with pytest.raises(ValueError):
        MoeAdapter(16, rank=2, dispatch="fast")


# ---------------------------------------------------------------- auxiliary losses


def simplex_etf(
    num_experts: int, dim: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """K unit vectors in R^dim forming an exact simplex ETF, randomly rotated.

    Rows of the centring matrix ``I - 11^T / K`` scaled by ``sqrt(K / (K-1))``
    have unit norm and pairwise inner product ``-1/(K-1)``; they span K-1
    dimensions, which are mapped isometrically into R^dim by a random matrix
    with orthonormal columns. Needs ``dim >= K - 1``.

    Returns:
        (K, dim) tensor whose Gram matrix is :func:`ideal_etf_gram` (K >= 2), or a
        single random unit vector (K = 1).
    """
    if num_experts < 1 or dim < max(num_experts - 1, 1):
        raise ValueError(f"need K >= 1 and dim >= max(K - 1, 1), got K={num_experts}, dim={dim}")
    if num_experts == 1:
        vector = torch.randn(1, dim, generator=generator, dtype=torch.float64)
        return F.normalize(vector, dim=-1).to(dtype)
    centring = torch.eye(num_experts, dtype=torch.float64) - 1.0 / num_experts
    basis, _ = torch.linalg.qr(centring[:, : num_experts - 1])  # (K, K-1), spans the centred subspace
    coords = centring @ basis * math.sqrt(num_experts / (num_experts - 1))  # (K, K-1)
    rotation, _ = torch.linalg.qr(torch.randn(dim, num_experts - 1, generator=generator, dtype=torch.float64))
    return (coords @ rotation.T).to(dtype)


@pytest.mark.parametrize(("num_experts", "dim"), [(2, 5), (4, 16), (4, 3), (8, 1024)])
def test_simplex_etf_has_the_ideal_gram(num_experts, dim):
    etf = simplex_etf(num_experts, dim, torch.Generator().manual_seed(0))
    assert etf.shape == (num_experts, dim)
    assert torch.allclose(etf @ etf.T, ideal_etf_gram(num_experts), atol=1e-6)


def test_etf_loss_zero_on_simplex_etf_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    # 6 tokens, each with its own randomly rotated and scaled simplex ETF.
    etfs = torch.stack([simplex_etf(4, 16, generator) * (i + 1) for i in range(6)])  # (6, 4, 16)
    assert etf_loss(etfs).item() == pytest.approx(0.0, abs=1e-6)
    assert etf_loss(etfs.reshape(2, 3, 4, 16)).item() == pytest.approx(0.0, abs=1e-6)
    random = torch.randn(6, 4, 16, generator=generator)
    assert etf_loss(random).item() > 0.05
    identical = torch.randn(6, 1, 16, generator=generator).expand(6, 4, 16)
    # Identical vectors: Gram all ones; off-diagonal error (1 + 1/3)^2 on 12 of 16 entries.
    assert etf_loss(identical).item() == pytest.approx(12 / 16 * (4 / 3) ** 2, rel=1e-5)


def test_balance_loss_zero_at_uniform_load_positive_otherwise():
    uniform = torch.full((2, 10, 4), 0.25)
    assert balance_loss(uniform).item() == pytest.approx(0.0, abs=1e-9)
    # Non-uniform per token but balanced load overall is still zero.
    swapped = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    assert balance_loss(swapped).item() == pytest.approx(0.0, abs=1e-9)
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 4)
    load = torch.tensor([2.8, 0.4, 0.4, 0.4])
    expected = load.var(unbiased=True) / (load.mean() ** 2 + 1e-6)
    assert balance_loss(skewed).item() == pytest.approx(expected.item(), rel=1e-6)
    assert balance_loss(torch.ones(3, 1)).item() == 0.0


def test_aux_losses_reach_b_and_router_in_training_mode():
    """The released code never trains with its auxiliary losses; here they must produce gradients.

    ETF acts on the expert outputs before routing (so on B only); balance acts on
    the router probabilities (so on the router only).
    """
    adapter = MoeAdapter(16, num_experts=4, top_k=2, rank=2).train()
    _randomise_b(adapter)
    out = adapter(_hidden())
    assert out.expert_outputs is not None
    etf = etf_loss(out.expert_outputs)
    balance = balance_loss(out.router_probs)
    assert etf.item() > 0 and balance.item() > 0
    b_grad, = torch.autograd.grad(etf, adapter.experts.lora_b, retain_graph=True)
    router_grad, = torch.autograd.grad(balance, adapter.router.gate.weight)
    assert b_grad.abs().sum() > 0
    assert router_grad.abs().sum() > 0


def test_one_adam_step_lowers_a_simple_loss():
    torch.manual_seed(0)
    d, classes = 16, 3
    adapter = MoeAdapter(d, num_experts=4, top_k=2, rank=2, dropout=0.0).train()
    head = torch.nn.Linear(d, classes)
    hidden = _hidden(batch=4, tokens=6, d=d)
    labels = torch.randint(0, classes, (4, 6))
    params = [p for p in [*adapter.parameters(), *head.parameters()] if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-2)

    def loss_fn() -> torch.Tensor:
        out = adapter(hidden)
        logits = head(out.hidden)
        task = torch.nn.functional.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1))
        return task + 0.01 * etf_loss(out.expert_outputs) + 0.01 * balance_loss(out.router_probs)

    before = loss_fn()
    optimiser.zero_grad()
    before.backward()
    assert all(torch.isfinite(p.grad).all() for p in params)
    optimiser.step()
    assert adapter.experts.lora_b.abs().sum() > 0
    assert loss_fn().item() < before.item()


def test_moe_alone_lowers_the_loss_with_a_frozen_head():
    torch.manual_seed(0)
    d, classes = 16, 3
    adapter = MoeAdapter(d, num_experts=4, top_k=2, rank=4, dropout=0.0, lambda_moe=0.5).train()
    head = torch.nn.Linear(d, classes).requires_grad_(False)
    hidden = _hidden(batch=4, tokens=6, d=d)
    labels = torch.randint(0, classes, (4, 6))
    optimiser = torch.optim.Adam([p for p in adapter.parameters() if p.requires_grad], lr=1e-2)

    def loss_fn() -> torch.Tensor:
        logits = head(adapter(hidden).hidden)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1))

    start = loss_fn().item()
    for _ in range(30):
        optimiser.zero_grad()
        loss_fn().backward()
        optimiser.step()
    assert loss_fn().item() < start - 0.05


def test_etf_gram_is_float32_under_bf16_autocast():
    outputs = torch.randn(64, 4, 32).bfloat16()
    expected = etf_loss(outputs.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = etf_loss(outputs)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, expected, rtol=1e-6)


def test_inference_blend_equals_norm_matching_then_residual_mix():
    """blend_matched = lambda * match_norm(update, x) + (1 - lambda) * x (Eq. 4, 5), also
    for a bf16 update (its norm in float32) and for a zero update (stays x * (1 - lambda))."""
    torch.manual_seed(0)
    update, reference = torch.randn(5, 16) * 0.01, torch.randn(5, 16) * 3
    update[2] = 0.0
    expected = 0.1 * match_norm(update, reference) + 0.9 * reference
    assert torch.allclose(blend_matched(update, reference, 0.1), expected, atol=1e-6)
    assert torch.allclose(blend_matched(update, reference, 0.1)[2], 0.9 * reference[2])
    low = update.bfloat16()
    expected_low = 0.1 * match_norm(low.float(), reference) + 0.9 * reference
    assert blend_matched(low, reference, 0.1).dtype == torch.float32
    assert torch.allclose(blend_matched(low, reference, 0.1), expected_low, atol=1e-6)


def test_adapter_output_is_the_same_with_and_without_autograd():
    adapter = MoeAdapter(32, num_experts=4, top_k=2, rank=4, dispatch="stacked").eval()
    _randomise_b(adapter)
    hidden = torch.randn(2, 10, 32, requires_grad=True)
    with_grad = adapter(hidden).hidden
    with torch.no_grad():
        without = adapter(hidden).hidden
    assert with_grad.requires_grad and not without.requires_grad
    assert torch.allclose(with_grad, without, atol=1e-6)
