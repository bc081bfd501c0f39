"""The fused-attention block path against OpenCLIP's own block forward (fp32, CPU)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock

from zsad.methods import build_method
from zsad.vit_blocks import run_block, supports_fused_attention


@contextlib.contextmanager
def plain_blocks(backbone):
    """Run the backbone with OpenCLIP's block forward inside the block."""
    backbone.fused_attention = False
    try:
        yield
    finally:
        backbone.fused_attention = True


def test_fused_block_equals_openclip_block_with_and_without_layer_scale():
    torch.manual_seed(3)
    for layer_scale in (None, 0.5):
        block = ResidualAttentionBlock(32, 4, ls_init_value=layer_scale).eval()
        assert supports_fused_attention(block)
        x = torch.randn(2, 10, 32)
        fused, update = run_block(block, x, with_vv=False)
        assert update is None
        assert torch.allclose(fused, block(x), atol=1e-6)


def test_blocks_the_fused_path_cannot_reproduce_fall_back_to_openclip():
    block = ResidualAttentionBlock(32, 4).eval()
    block.attn.add_zero_attn = True  # an extra zero key/value changes the softmax
    assert not supports_fused_attention(block)
    x = torch.randn(1, 5, 32)
    assert torch.equal(run_block(block, x, with_vv=False)[0], block(x))


def test_forward_visual_fused_equals_plain_with_vv_stream(tiny_backbone):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused = tiny_backbone.forward_visual(images, taps=(1, 2, 3, 4), vv_start=3)
        with plain_blocks(tiny_backbone):
            plain = tiny_backbone.forward_visual(images, taps=(1, 2, 3, 4), vv_start=3)
    for block in (1, 2, 3, 4):
        assert torch.allclose(fused.hidden[block], plain.hidden[block], atol=1e-5)
    for block in (3, 4):
        assert torch.allclose(fused.vv_hidden[block], plain.vv_hidden[block], atol=1e-5)
    assert torch.allclose(fused.image_embedding, plain.image_embedding, atol=1e-5)


@pytest.mark.parametrize("method", ["moeclip", "zeroshot"])
def test_method_maps_and_scores_agree_with_the_plain_path(tiny_backbone, method):
    torch.manual_seed(0)
    detector = build_method(method, tiny_backbone, {}).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused = detector(images, ["bottle", "screw"])
        with plain_blocks(tiny_backbone):
            plain = detector(images, ["bottle", "screw"])
    assert torch.allclose(fused.anomaly_map, plain.anomaly_map, atol=1e-5)
    assert torch.allclose(fused.pred_score, plain.pred_score, atol=1e-5)


def test_training_gradients_agree_with_the_plain_path_under_checkpointing(tiny_backbone):
    images = torch.randn(1, 3, 64, 64)
    grads = []
    for mode in (contextlib.nullcontext, lambda: plain_blocks(tiny_backbone)):
        scale = torch.nn.Parameter(torch.ones(()))
        with mode():
            features = tiny_backbone.forward_visual(
                images, stream_modules={1: lambda h: h * scale}, vv_start=3, checkpoint_frozen_blocks=True
            )
            (features.hidden[4].pow(2).mean() + features.vv_hidden[4].pow(2).mean()).backward()
        grads.append(scale.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4)
