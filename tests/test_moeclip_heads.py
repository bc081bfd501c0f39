"""Tests of the MoECLIP heads: PAA, layer projections, depth-wise adapter, anomaly maps."""

import math

import pytest
import torch
import torch.nn.functional as F

from zsad.maps import cosine_scores
from zsad.methods.moeclip.heads import (
    DepthwiseAdapter,
    LayerProjections,
    anomalous_probabilities,
    anomaly_logits,
    patch_average,
    project_patch_averages,
)

# ---------------------------------------------------------------- PAA


@pytest.mark.parametrize("scales", [(1, 3, 5), (5, 1), (7, 3), (9,)])
def test_patch_average_matches_avg_pool2d_reference(scales):
    tokens = torch.randn(2, 36, 5)  # 6 x 6 grid (a 9 x 9 window is wider than the grid)
    grid = tokens.transpose(1, 2).reshape(2, 5, 6, 6)
    outputs = patch_average(tokens, scales=scales)
    assert len(outputs) == len(scales) and all(o.shape == tokens.shape for o in outputs)
    for scale, output in zip(scales, outputs):
        if scale == 1:
            assert torch.equal(output, tokens)  # s = 1 is the identity
            continue
        reference = F.avg_pool2d(grid, scale, stride=1, padding=scale // 2, count_include_pad=True)
        assert torch.allclose(output, reference.flatten(2).transpose(1, 2), atol=1e-6)


def test_patch_average_border_divides_by_s_squared():
    values = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # 4 x 4 grid, raster order
    three, five = patch_average(values, scales=(3, 5))
    # Top-left corner, s = 3: window covers (0,0), (0,1), (1,0), (1,1) = 0 + 1 + 4 + 5, divided by 9.
    assert three[0, 0, 0].item() == pytest.approx(10 / 9)
    # Top-left corner, s = 5: the 3 x 3 top-left block 0+1+2+4+5+6+8+9+10 = 45, divided by 25.
    assert five[0, 0, 0].item() == pytest.approx(45 / 25)
    # Interior token (1, 1) with s = 3: full window 0+1+2+4+5+6+8+9+10 = 45, divided by 9.
    assert three[0, 5, 0].item() == pytest.approx(5.0)


def test_patch_average_rejects_non_square_and_even_scales():
    with pytest.raises(ValueError, match="square"):
        patch_average(torch.randn(1, 37, 4))  # CLS left in
    with pytest.raises(ValueError):
        patch_average(torch.randn(1, 36, 4), scales=(2,))


# ---------------------------------------------------------------- projections


def test_layer_projections_are_bias_free_xavier_and_per_layer():
    torch.manual_seed(0)
    projections = LayerProjections(64, 32, num_layers=4)
    bound = math.sqrt(6 / (64 + 32))
    for projection in projections.projections:
        assert projection.bias is None
        assert projection.weight.shape == (32, 64)
        assert projection.weight.abs().max() <= bound
        assert projection.weight.std() > 0.5 * bound / math.sqrt(3)  # not a tiny init
    tokens = torch.randn(2, 9, 64)
    layers = projections.projections
    assert layers[0](tokens).shape == (2, 9, 32)
    assert torch.allclose(layers[2](tokens), tokens @ layers[2].weight.T)
    assert not torch.allclose(layers[0](tokens), layers[1](tokens))


# ---------------------------------------------------------------- depth-wise adapter


def test_depthwise_adapter_output_shape_and_parameters():
    adapter = DepthwiseAdapter(16, 8)
    assert adapter(torch.randn(3, 25, 16)).shape == (3, 8)
    assert adapter.depthwise.weight.shape == (16, 1, 3)
    assert adapter.depthwise.bias is None
    # 1024 -> 768 at ViT-L scale: LN 2048 + depth-wise 3072 + point-wise 786,432 + 768.
    big = DepthwiseAdapter(1024, 768)
    assert sum(p.numel() for p in big.parameters()) == 2048 + 3072 + 1024 * 768 + 768


def test_depthwise_conv_is_per_channel_and_local_in_the_sequence():
    """Changing channel c at token t changes only channel c at tokens t-1, t, t+1."""
    adapter = DepthwiseAdapter(6, 4)
    with torch.no_grad():
        adapter.depthwise.weight.normal_()
    sequence = torch.randn(1, 6, 10)  # (B, d, L) input of the depth-wise conv
    changed = sequence.clone()
    channel, token = 2, 5
    changed[0, channel, token] += 1.0
    with torch.no_grad():
        difference = (adapter.depthwise(changed) - adapter.depthwise(sequence)).abs()
    affected = difference > 1e-6
    expected = torch.zeros_like(affected)
    expected[0, channel, token - 1 : token + 2] = True
    assert torch.equal(affected, expected)


def test_depthwise_adapter_equals_its_module_composition():
    """forward = mean over the sequence of pointwise(GELU(depthwise(LN(tokens)))), the
    convolutions run by the Conv1d modules on the (B, d, L) sequence."""
    torch.manual_seed(0)
    adapter = DepthwiseAdapter(8, 5)
    with torch.no_grad():
        adapter.depthwise.weight.normal_()
        adapter.norm.bias.normal_()
    tokens = torch.randn(3, 16, 8)
    sequence = adapter.norm(tokens).transpose(1, 2)
    reference = adapter.pointwise(adapter.activation(adapter.depthwise(sequence))).mean(dim=-1)
    assert torch.allclose(adapter(tokens), reference, atol=1e-5)


def test_depthwise_adapter_keeps_images_apart_and_trains_every_parameter():
    adapter = DepthwiseAdapter(8, 4)
    tokens = torch.randn(3, 16, 8)
    together = adapter(tokens)
    alone = torch.cat([adapter(tokens[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)
    together.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


# ---------------------------------------------------------------- anomaly maps


def test_anomaly_logits_are_scaled_cosines_on_the_raster_grid():
    normal, anomalous = torch.eye(4)[0], torch.eye(4)[1]
    text = torch.stack([normal, anomalous])
    features = normal.repeat(1, 9, 1) * 3.0  # (1, 9, 4), 3 x 3 grid, not unit norm
    features[0, 5] = anomalous * 0.5  # row 1, column 2
    logits = anomaly_logits(features, text)
    assert logits.shape == (1, 2, 3, 3)
    assert logits[0, 1, 1, 2].item() == pytest.approx(100.0)
    assert logits[0, 0, 1, 2].item() == pytest.approx(0.0)
    assert logits[0, 0, 0, 0].item() == pytest.approx(100.0)
    assert anomaly_logits(features, text, logit_scale=1.0)[0, 1, 1, 2].item() == pytest.approx(1.0)


def test_anomaly_logits_accept_per_image_text():
    torch.manual_seed(0)
    features, text = torch.randn(2, 16, 8), torch.randn(2, 8)
    shared = anomaly_logits(features, text)
    per_image = anomaly_logits(features, text.expand(2, 2, 8))
    assert torch.allclose(shared, per_image, atol=1e-5)
    other = torch.stack([text, torch.randn(2, 8)])
    mixed = anomaly_logits(features, other)
    assert torch.allclose(mixed[0], shared[0], atol=1e-5)
    assert not torch.allclose(mixed[1], shared[1], atol=1e-3)
    assert cosine_scores(features[:, 0], text).shape == (2, 2)  # image-level use (B, d_t)
    with pytest.raises(ValueError):
        anomaly_logits(features, torch.randn(3, 2, 8))


def test_anomalous_probabilities_are_the_softmax_of_upsampled_logits():
    """The spec's map: upsample the (normal, anomalous) logits, then softmax; channel 1.
    From the logit gaps in one call for several maps, it must be the same map."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 4, 4) * 5  # (B, maps, 2, h, w)
    gaps = logits[:, :, 1] - logits[:, :, 0]
    probs = anomalous_probabilities(gaps, 16)
    assert probs.shape == (2, 3, 16, 16)
    for index in range(3):
        upsampled = F.interpolate(logits[:, index], size=(16, 16), mode="bilinear", align_corners=False)
        reference = upsampled.softmax(dim=1)[:, 1]
        assert torch.allclose(probs[:, index], reference, atol=1e-6)
        # Upsampling happens on logits, not on probabilities: the two orders differ.
        probabilities_first = F.interpolate(
            logits[:, index].softmax(dim=1), size=(16, 16), mode="bilinear", align_corners=False
        )[:, 1]
        assert not torch.allclose(probs[:, index], probabilities_first, atol=1e-4)
    constant = torch.full((1, 1, 3, 3), math.log(3.0))
    assert torch.allclose(anomalous_probabilities(constant, (5, 7))[0, 0], torch.full((5, 7), 0.75))


def test_one_projection_serves_every_paa_scale_exactly():
    torch.manual_seed(0)
    tokens = torch.randn(2, 36, 24) * 3 + 0.5
    layer_norm = torch.nn.LayerNorm(24)
    with torch.no_grad():
        layer_norm.weight.normal_(1.0, 0.3)
        layer_norm.bias.normal_(0.0, 0.3)
    projection = torch.nn.Linear(24, 10, bias=False)
    fused = project_patch_averages(tokens, (1, 3, 5), layer_norm, projection)
    plain = [projection(layer_norm(averaged)) for averaged in patch_average(tokens, (1, 3, 5))]
    for fast, reference in zip(fused, plain):
        assert torch.allclose(fast, reference, atol=1e-4), (fast - reference).abs().max()
    # gradients reach the projection and the tokens the same way
    grads = []
    for outputs in (fused, plain):
        projection.zero_grad()
        sum(o.square().sum() for o in outputs).backward(retain_graph=True)
        grads.append(projection.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- bf16 autocast


def _bf16_token_distributions() -> dict[str, torch.Tensor]:
    base = torch.randn(1, 37 * 37, 1024, generator=torch.Generator().manual_seed(0))
    outlier = base.clone()
    outlier[..., 0] += 300.0
    return {"zero mean": base, "mean shifted by 3": base + 3.0, "one channel at +300": outlier}


@pytest.mark.parametrize("distribution", ["zero mean", "mean shifted by 3", "one channel at +300"])
def test_fused_head_under_bf16_autocast_stays_within_plain_fp32_error(distribution):
    """Spec "Precision": bf16 vs fp32 feature relative error <= 1 %, max logit error <= 0.1
    (d = 1024, 37 x 37 grid), for tokens with a large mean or a channel in the hundreds."""
    tokens = _bf16_token_distributions()[distribution]
    layer_norm = torch.nn.LayerNorm(1024)
    with torch.no_grad():
        layer_norm.weight.uniform_(0.8, 1.2)
        layer_norm.bias.normal_(0.0, 0.1)
    projection = torch.nn.Linear(1024, 768, bias=False)
    torch.nn.init.xavier_uniform_(projection.weight)
    text = F.normalize(torch.randn(2, 768), dim=-1)
    with torch.no_grad():
        reference = project_patch_averages(tokens, (1, 3, 5), layer_norm, projection)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = project_patch_averages(tokens, (1, 3, 5), layer_norm, projection)
            low_logits = [anomaly_logits(features, text) for features in low]
            assert (tokens[0, :2] @ projection.weight.t()).dtype == torch.bfloat16  # the region was really bf16
        for features, expected, logits in zip(low, reference, low_logits):
            assert features.dtype == torch.float32 and logits.dtype == torch.float32
            relative = torch.linalg.vector_norm(features - expected) / torch.linalg.vector_norm(expected)
            assert relative <= 0.01
            assert (logits - anomaly_logits(expected, text)).abs().max() <= 0.1


def test_cosines_softmax_and_smoothing_stay_float32_under_autocast():
    from zsad.maps import gaussian_smooth

    features, text = torch.randn(2, 9, 8), F.normalize(torch.randn(2, 8), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = cosine_scores(features.bfloat16(), text)
        probs = anomalous_probabilities(torch.randn(2, 2, 3, 3).bfloat16(), 6)
        smoothed = gaussian_smooth(torch.rand(2, 6, 6).bfloat16(), 1.0)
    assert scores.dtype == probs.dtype == smoothed.dtype == torch.float32
    assert torch.allclose(scores, cosine_scores(features.bfloat16().float(), text), atol=1e-6)
