"""Training-free baseline: its maps and scores follow the definition."""
from __future__ import annotations

import pytest
import torch

from zsad.maps import gaussian_smooth, upsample
from zsad.methods import build_method


def test_zeroshot_matches_a_step_by_step_reference(tiny_backbone):
    detector = build_method("zeroshot", tiny_backbone, {"smoothing_sigma": 0.0}).eval()
    images = torch.randn(2, 3, 64, 64)
    output = detector(images, ["bottle", "screw"])
    text = detector.text_bank.features(tiny_backbone, ["bottle", "screw"])
    features = tiny_backbone.forward_visual(images, vv_start=3)
    scale = tiny_backbone.logit_scale
    layer_maps = []
    for block in tiny_backbone.default_taps():
        tokens = torch.nn.functional.normalize(tiny_backbone.project_tokens(features.patch_tokens(block)), dim=-1)
        probs = (scale * torch.einsum("bld,bkd->blk", tokens, text)).softmax(-1)[..., 1]
        layer_maps.append(probs.reshape(2, 1, 8, 8))
    expected_map = upsample(torch.stack(layer_maps).mean(0), 64).squeeze(1)
    assert torch.allclose(output.anomaly_map, expected_map, atol=1e-5)
    embedding = torch.nn.functional.normalize(features.image_embedding, dim=-1)
    global_prob = (scale * torch.einsum("bd,bkd->bk", embedding, text)).softmax(-1)[:, 1]
    expected_score = 0.5 * (expected_map.flatten(1).amax(1) + global_prob)
    assert torch.allclose(output.pred_score, expected_score, atol=1e-5)


def test_zeroshot_maps_are_smoothed_probabilities(tiny_backbone):
    raw = build_method("zeroshot", tiny_backbone, {"smoothing_sigma": 0.0}).eval()
    smooth = build_method("zeroshot", tiny_backbone, {"smoothing_sigma": 4.0}).eval()
    images = torch.randn(1, 3, 64, 64)
    raw_map, smooth_map = raw(images, ["object"]).anomaly_map, smooth(images, ["object"]).anomaly_map
    assert torch.allclose(smooth_map, gaussian_smooth(raw_map, 4.0 * 64 / 518), atol=1e-6)
    assert 0.0 <= float(smooth_map.min()) and float(smooth_map.max()) <= 1.0
    assert smooth_map.std() < raw_map.std()


def test_without_vv_path_the_main_stream_is_used(tiny_backbone):
    with_vv = build_method("zeroshot", tiny_backbone, {}).eval()
    without = build_method("zeroshot", tiny_backbone, {"vv_path": False}).eval()
    images = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(with_vv(images, ["object"]).anomaly_map, without(images, ["object"]).anomaly_map)
    assert without.vv_start is None and with_vv.vv_start == tiny_backbone.default_vv_start()


def test_gaussian_smoothing_preserves_constants_and_mass():
    constant = torch.full((1, 32, 32), 0.3)
    assert torch.allclose(gaussian_smooth(constant, 2.0), constant, atol=1e-6)
    spike = torch.zeros(1, 33, 33)
    spike[0, 16, 16] = 1.0
    blurred = gaussian_smooth(spike, 2.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-3 and blurred[0, 16, 16] < 0.1
    assert torch.equal(gaussian_smooth(spike, 0.0), spike)


def test_separable_smoothing_equals_torchvision_gaussian_blur():
    from torchvision.transforms.v2 import functional as TF

    maps = torch.rand(2, 40, 50)
    expected = TF.gaussian_blur(maps.unsqueeze(1), kernel_size=[17, 17], sigma=[2.0, 2.0]).squeeze(1)
    assert torch.allclose(gaussian_smooth(maps, 2.0), expected, atol=1e-5)


def test_blur_matrices_give_the_convolution_smoothing():
    """The GPU path of gaussian_smooth (two matmuls with blur matrices that hold the
    reflection) equals the CPU path (reflect padding + two 1-D convolutions)."""
    from zsad.maps import gaussian_blur_matrix

    maps = torch.rand(2, 40, 50)
    rows, columns = gaussian_blur_matrix(40, 4.0), gaussian_blur_matrix(50, 4.0)
    assert torch.allclose(rows @ maps @ columns.T, gaussian_smooth(maps, 4.0), atol=1e-6)
    assert torch.allclose(rows.sum(dim=1), torch.ones(40), atol=1e-6)  # a weighted mean per pixel
    with pytest.raises(ValueError, match="too small"):
        gaussian_blur_matrix(16, 4.0)  # needs a side > 4 sigma, like the reflection padding
