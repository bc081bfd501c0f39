"""MoECLIP wired into the tiny backbone: dispatch equality, frozen FOFS, active auxiliary
losses with gradients, a loss-lowering step, ablation switches, parameter count."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zsad.backbone import ClipBackbone
from zsad.methods import build_method
from zsad.methods.moeclip.config import MoEClipConfig
from zsad.methods.moeclip.model import MoEClipDetector


def _batch(size=64):
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, size, size, generator=generator)
    masks = torch.zeros(2, 1, size, size)
    masks[0, :, 10:30, 20:40] = 1
    labels = torch.tensor([1, 0])
    return images, masks, labels


def _model(tiny_backbone, **overrides):
    torch.manual_seed(0)
    return build_method("moeclip", tiny_backbone, overrides)


def _randomise_b(model):
    with torch.no_grad():
        for layer in model.moe_layers:
            layer.experts.lora_b.normal_(0, 0.5)


def test_sparse_stacked_and_dense_inference_give_the_same_maps(tiny_backbone):
    model = _model(tiny_backbone).eval()
    _randomise_b(model)
    images, _, _ = _batch()
    outputs = {}
    with torch.no_grad():
        for dispatch in ("sparse", "stacked", "dense"):
            for layer in model.moe_layers:
                layer.dispatch = dispatch
            outputs[dispatch] = model(images, ["bottle"] * 2)
    sparse = outputs["sparse"]
    for other in ("stacked", "dense"):
        assert torch.allclose(sparse.anomaly_map, outputs[other].anomaly_map, atol=1e-5)
        assert torch.allclose(sparse.pred_score, outputs[other].pred_score, atol=1e-5)
    assert sparse.anomaly_map.shape == (2, 64, 64)
    assert 0 <= float(sparse.anomaly_map.min()) and float(sparse.anomaly_map.max()) <= 1


def test_auxiliary_losses_are_active_and_train_router_and_b(tiny_backbone):
    model = _model(tiny_backbone).train()
    _randomise_b(model)
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 2, masks=masks, labels=labels)
    assert set(output.losses) == {"seg", "cls", "etf", "balance"}
    assert output.losses["etf"] > 0 and output.losses["balance"] > 0
    for name in ("etf", "balance"):
        model.zero_grad()
        output = model(images, ["bottle"] * 2, masks=masks, labels=labels)
        output.losses[name].backward()
        for layer in model.moe_layers:
            # ETF acts on every layer's expert outputs (B); balance on every router.
            trained = layer.experts.lora_b if name == "etf" else layer.router.gate.weight
            assert trained.grad is not None and trained.grad.abs().sum() > 0, name


@pytest.mark.parametrize("score_mode", ["fused", "det", "map"])
def test_training_keeps_map_and_score_out_of_the_graph_with_eval_values(tiny_backbone, score_mode):
    """In training only the losses carry gradients; the returned map and score are the
    same values as in eval mode (no dropout, dense dispatch: same computation)."""
    model = _model(tiny_backbone, lora_dropout=0.0, dispatch="dense", score_mode=score_mode)
    _randomise_b(model)
    images, masks, labels = _batch()
    trained = model.train()(images, ["bottle"] * 2, masks=masks, labels=labels)
    assert not trained.anomaly_map.requires_grad and not trained.pred_score.requires_grad
    assert all(loss.requires_grad for loss in trained.losses.values())
    with torch.no_grad():
        evaluated = model.eval()(images, ["bottle"] * 2)
    assert torch.allclose(trained.anomaly_map, evaluated.anomaly_map, atol=1e-6)
    assert torch.allclose(trained.pred_score, evaluated.pred_score, atol=1e-6)
    # Outside training, gradients reach the map (e.g. for saliency analyses).
    assert model.eval()(images, ["bottle"] * 2).anomaly_map.requires_grad


def test_no_losses_in_eval_mode(tiny_backbone):
    model = _model(tiny_backbone).eval()
    images, masks, labels = _batch()
    with torch.no_grad():
        assert model(images, ["bottle"] * 2, masks=masks, labels=labels).losses == {}


def test_fofs_projection_is_frozen_saved_and_unchanged_by_training(tiny_backbone):
    model = _model(tiny_backbone).train()
    before = [layer.experts.lora_a.clone() for layer in model.moe_layers]
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images, masks, labels = _batch()
    for _ in range(2):
        optimiser.zero_grad()
        sum(model(images, ["bottle"] * 2, masks=masks, labels=labels).losses.values()).backward()
        optimiser.step()
    for layer, original in zip(model.moe_layers, before):
        assert not layer.experts.lora_a.requires_grad
        assert torch.equal(layer.experts.lora_a, original)
    state = model.trainable_state_dict()
    assert "moe_layers.0.experts.lora_a" in state
    assert not any(key.startswith("backbone.") for key in state)


def test_one_adam_step_lowers_the_loss_on_a_fixed_batch(tiny_backbone):
    model = _model(tiny_backbone, lora_dropout=0.0).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.5, 0.999))
    images, masks, labels = _batch()

    def total():
        return sum(model(images, ["bottle"] * 2, masks=masks, labels=labels).losses.values())

    first = total()
    assert torch.isfinite(first)
    optimiser.zero_grad()
    first.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimiser.step()
    assert total() < first


def test_unknown_masks_and_labels_are_left_out_of_the_losses(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, masks, labels = _batch()
    masks[1] = -1
    full = model(images[:1], ["bottle"], masks=masks[:1], labels=labels[:1]).losses
    torch.manual_seed(0)
    model.zero_grad()
    partial = model(images, ["bottle"] * 2, masks=masks, labels=torch.tensor([1, -1])).losses
    assert torch.allclose(partial["seg"], full["seg"], atol=1e-5)
    assert torch.allclose(partial["cls"], full["cls"], atol=1e-5)


@pytest.mark.parametrize(
    "overrides, present",
    [
        ({"fofs": False}, {"etf", "balance"}),
        ({"etf_loss": False}, {"balance"}),
        ({"etf_loss": False, "fofs": False}, {"balance"}),
        ({"depthwise_adapter": False}, {"etf", "balance"}),
        ({"paa_scales": [1]}, {"etf", "balance"}),
        ({"num_experts": 1, "top_k": 1}, {"etf", "balance"}),
        ({"router_hidden": 16}, {"etf", "balance"}),
        ({"full_rank_experts": True, "fofs": False}, {"etf", "balance"}),
        ({"text_adapter": True}, {"etf", "balance"}),
        ({"blocks": [2, 4], "num_experts": 8, "top_k": 3, "rank": 4}, {"etf", "balance"}),
    ],
)
def test_every_ablation_builds_and_trains(tiny_backbone, overrides, present):
    model = _model(tiny_backbone, **overrides).train()
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 2, masks=masks, labels=labels)
    assert {"seg", "cls"} | present == set(output.losses)
    sum(output.losses.values()).backward()
    assert model.trainable_parameter_count() > 0


@pytest.mark.parametrize("mode", ["det", "map", "fused"])
def test_score_modes(tiny_backbone, mode):
    model = _model(tiny_backbone, score_mode=mode).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        output = model(images, ["bottle"] * 2)
        reference = _model(tiny_backbone, score_mode="fused").eval()
        reference.load_state_dict(model.state_dict())
        fused = reference(images, ["bottle"] * 2).pred_score
    map_max = output.anomaly_map.flatten(1).amax(1)
    if mode == "map":
        assert torch.allclose(output.pred_score, map_max)
    if mode == "det":
        assert torch.allclose(fused, 0.5 * (output.pred_score + map_max), atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="score_mode"):
        MoEClipConfig(score_mode="best")
    with pytest.raises(ValueError, match="etf_weight"):
        MoEClipConfig(etf_weight=0.0)
    with pytest.raises(ValueError, match="paa_scales"):
        MoEClipConfig(paa_scales=(2,))
    with pytest.raises(ValueError, match="unknown MoEClipConfig fields"):
        MoEClipConfig.from_dict({"etf_wieght": 0.1})


class _VitLShapes(nn.Module):
    """Only the sizes of ViT-L-14-336 that MoECLIP's own modules depend on."""

    width, embed_dim, depth = 1024, 768, 24
    default_taps = ClipBackbone.default_taps
    resolve_taps = ClipBackbone.resolve_taps


def test_trainable_parameter_count_matches_the_paper_scale():
    model = MoEClipDetector(_VitLShapes(), MoEClipConfig(text_adapter=False))
    count = model.trainable_parameter_count()
    # 4 x (router 1024*4 + B 4*1024*8) + 4 x 1024*768 projections + adapter (LN, depth-wise, point-wise)
    expected = 4 * (4096 + 32768) + 4 * 1024 * 768 + (2 * 1024 + 1024 * 3 + 1024 * 768 + 768)
    assert count == expected
    assert 4.0e6 < count < 4.2e6  # paper: about 4.1 M
    # The paper recipe (the default) trains the text adapter too: ~4.7 M.
    with_text = MoEClipDetector(_VitLShapes(), MoEClipConfig()).trainable_parameter_count()
    assert with_text - count == 768 * 768


def _spec_probability_maps(model, backbone, images, text, size):
    """The spec's 12 maps by the plain path: per block and scale, upsample the (normal,
    anomalous) logits, then softmax over the two classes. -> list of (B, 2, S, S)."""
    import torch.nn.functional as F

    from zsad.methods.moeclip.heads import anomaly_logits, project_patch_averages

    features = backbone.forward_visual(images, taps=model.blocks, stream_modules=dict(zip(model.blocks, model.moe_layers)))
    maps = []
    for layer, block in enumerate(model.blocks):
        tokens = features.hidden[block][:, 1:]
        projection = model.projections.projections[layer]
        ln_post = backbone.clip.visual.ln_post
        for projected in project_patch_averages(tokens, model.config.paa_scales, ln_post, projection):
            logits = anomaly_logits(projected, text, model.config.logit_scale)
            upsampled = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
            maps.append(upsampled.softmax(dim=1))
    return maps


def test_map_equals_the_spec_composition_of_the_twelve_maps(tiny_backbone):
    """The detector's map (logit gaps, one upsampling, sigmoid) against the plain path: mean
    of the 12 anomalous-class maps, Gaussian smoothing, clamp (``map_smoothing: pixel``)."""
    from zsad.maps import gaussian_smooth

    model = _model(tiny_backbone, map_smoothing="pixel").eval()
    _randomise_b(model)
    images, _, _ = _batch()
    words = ["bottle"] * 2
    with torch.no_grad():
        output = model(images, words)
        maps = _spec_probability_maps(model, tiny_backbone, images, model.text_features(words, images.device), 64)
        expected = gaussian_smooth(torch.stack([probs[:, 1] for probs in maps]).mean(dim=0), 4.0 * 64 / 518)
    assert len(maps) == 12
    assert torch.allclose(output.anomaly_map, expected.clamp(0, 1), atol=1e-6)


def test_segmentation_loss_is_the_sum_over_the_twelve_maps(tiny_backbone):
    """Eq. 15: seg = sum over the 12 spec maps of Focal + Dice (one stacked call in the model);
    Dice with the released code's two terms: normal channel vs 1 - mask, anomalous vs mask."""
    from zsad.losses import dice_loss, focal_loss

    model = _model(tiny_backbone, lora_dropout=0.0).train()
    _randomise_b(model)
    images, masks, labels = _batch()
    masks[1] = -1  # the second image's mask is unknown: no segmentation loss for it
    words = ["bottle"] * 2
    with torch.no_grad():
        output = model(images, words, masks=masks, labels=labels)
        maps = _spec_probability_maps(model, tiny_backbone, images, model.text_features(words, images.device), 64)
    target = masks[:1, 0].long()
    dice = [dice_loss(probs[:1, 0], 1.0 - target.float()) + dice_loss(probs[:1, 1], target.float()) for probs in maps]
    expected = sum(focal_loss(probs[:1], target) + two_terms for probs, two_terms in zip(maps, dice))
    assert torch.allclose(output.losses["seg"], expected, atol=1e-5)
    one_term = _model(tiny_backbone, lora_dropout=0.0, two_term_dice=False).train()
    one_term.load_state_dict(model.state_dict())
    with torch.no_grad():
        seg = one_term(images, words, masks=masks, labels=labels).losses["seg"]
    expected = sum(focal_loss(probs[:1], target) + dice_loss(probs[:1, 1], target.float()) for probs in maps)
    assert torch.allclose(seg, expected, atol=1e-5)


def _released_map(model, backbone, images, text, size, window, sigma):
    """The released test path (forward_utils.calculate_similarity_map, test=True), written
    out with scipy: per map (100 cos_A + 1 - 100 cos_N) / 2 on the patch grid, a Gaussian
    of ``window`` cells (reflected borders, scipy's ``mirror``), bilinear upsampling with
    align_corners, summed over the 12 maps. -> (B, S, S) numpy."""
    import numpy as np
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    from zsad.methods.moeclip.heads import anomaly_logits, project_patch_averages

    features = backbone.forward_visual(images, taps=model.blocks, stream_modules=dict(zip(model.blocks, model.moe_layers)))
    total = 0
    for layer, block in enumerate(model.blocks):
        projection = model.projections.projections[layer]
        patches = features.hidden[block][:, 1:]
        for projected in project_patch_averages(patches, model.config.paa_scales, backbone.clip.visual.ln_post, projection):
            logits = anomaly_logits(projected, text, model.config.logit_scale).numpy()  # (B, 2, h, h)
            grid = (logits[:, 1] + 1 - logits[:, 0]) / 2
            blurred = np.stack([gaussian_filter(g, sigma, mode="mirror", truncate=(window // 2) / sigma) for g in grid])
            up = F.interpolate(torch.from_numpy(blurred).unsqueeze(1), size=(size, size), mode="bilinear", align_corners=True)
            total = total + up[:, 0].numpy()
    return total


@pytest.mark.parametrize("domain, window, sigma", [("industrial", 7, 1.0), ("medical", 9, 1.5)])
def test_grid_smoothing_and_score_follow_the_released_test_path(tiny_backbone, domain, window, sigma):
    """Default recipe: the map is the released code's summed map up to a monotone map
    (R = 6 (1 + up(blur(mean gap))), ours = sigmoid(R / 6 - 1)), so every pixel metric is
    the released code's; the score is fused on industrial images and the map's maximum
    alone on medical ones."""
    model = _model(tiny_backbone).eval()
    _randomise_b(model)
    images, _, _ = _batch()
    words = ["bottle"] * 2
    with torch.no_grad(), model.scoring_domain(domain):
        output = model(images, words)
        released = _released_map(model, tiny_backbone, images, model.text_features(words, images.device), 64, window, sigma)
    assert model.domain == "industrial"  # restored after the context
    expected = torch.from_numpy(released / 6 - 1).float().sigmoid()
    assert torch.allclose(output.anomaly_map, expected, atol=1e-5)
    peak = output.anomaly_map.flatten(1).amax(dim=1)
    if domain == "medical":
        assert torch.allclose(output.pred_score, peak)
    else:
        with torch.no_grad():
            det = 2 * output.pred_score - peak
        assert not torch.allclose(output.pred_score, peak) and bool(((det >= 0) & (det <= 1)).all())


def test_the_domain_changes_only_the_smoothing_and_the_score(tiny_backbone):
    model = _model(tiny_backbone).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        industrial = model(images, ["bottle"] * 2)
        with model.scoring_domain("medical"):
            medical = model(images, ["bottle"] * 2)
    assert not torch.allclose(industrial.anomaly_map, medical.anomaly_map)
    with pytest.raises(ValueError, match="domain"), model.scoring_domain("satellite"):
        pass
