"""PromptMoE Tab. 5: the normal and abnormal branches share the query cross-attention,
the expert prompt pool, or both; separate components are the paper's recipe."""
from __future__ import annotations

import pytest
import torch

from zsad.methods import build_method
from zsad.methods.promptmoe.config import PromptMoEConfig
from zsad.methods.promptmoe.vgmop import VGMoP


def _vgmop(**switches) -> VGMoP:
    torch.manual_seed(0)
    return VGMoP(
        visual_dim=12, token_dim=16, num_experts=4, top_k=2, num_queries=3, heads=2, router_hidden=8,
        normal_length=2, abnormal_length=3, init_std=1.0, **switches,
    )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_separate_attention_gives_each_branch_its_own_representation():
    module = _vgmop(shared_attention=False)
    visual = torch.randn(5, 7, 12)
    states = module(visual)
    normal_logits = module.pools["normal"].router(module.attention(visual))
    abnormal_logits = module.pools["abnormal"].router(module.abnormal_attention(visual))
    assert torch.allclose(states.routing["normal"].probabilities, normal_logits.softmax(-1))
    assert torch.allclose(states.routing["abnormal"].probabilities, abnormal_logits.softmax(-1))
    # The second attention is the only difference in parameters.
    assert _count(module) - _count(_vgmop(shared_attention=True)) == _count(module.abnormal_attention)


def test_shared_pool_mixes_one_set_of_experts_for_both_branches():
    module = _vgmop(shared_pool=True)
    visual = torch.randn(5, 7, 12)
    states = module(visual)
    experts = module.pools["normal"].experts  # (E, max(M_n, M_a), D)
    assert experts.shape == (4, 3, 16) and module.pools["abnormal"].experts is None
    for name, length in (("normal", 2), ("abnormal", 3)):
        weights = states.routing[name].dense_weights()
        expected = torch.einsum("be,emd->bmd", weights, experts)[:, :length]
        assert torch.allclose(getattr(states, name), expected, atol=1e-6)
    # Both branches' gradients reach the one pool.
    states.abnormal.sum().backward()
    assert experts.grad is not None and experts.grad.abs().sum() > 0


@pytest.mark.parametrize("switches", [{"shared_attention": False}, {"shared_pool": True}, {"shared_pool": True, "shared_attention": True}])
def test_each_sharing_variant_trains_on_the_tiny_backbone(tiny_backbone, switches):
    torch.manual_seed(0)
    model = build_method("promptmoe", tiny_backbone, switches).train()
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 10:30, 20:40] = 1
    output = model(images, ["bottle"] * 2, masks=masks, labels=torch.tensor([1, 0]))
    assert {"balance", "decouple"} <= set(output.losses)
    sum(output.losses.values()).backward()


def test_a_shared_pool_needs_routing():
    with pytest.raises(ValueError, match="shared_pool"):
        PromptMoEConfig(shared_pool=True, composition="averaged")
