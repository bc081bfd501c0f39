"""WMoE-CLIP wired into the tiny backbone: outputs, deterministic inference, losses,
gradients (never into CLIP), one lowering step, ablation switches, checkpoint round trip."""
from __future__ import annotations

import pytest
import torch

from zsad.checkpoints import read_checkpoint, save_checkpoint
from zsad.losses import dice_loss, focal_loss
from zsad.methods import build_method
from zsad.methods.build import build_detector, full_config
from zsad.methods.wmoeclip.config import WMoEClipConfig

LOSS_NAMES = {"focal", "dice", "bce", "kl", "rec", "balance"}


def _batch(size=64):
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, size, size, generator=generator)
    masks = torch.zeros(4, 1, size, size)
    masks[0, :, 10:30, 20:40] = 1
    masks[2, :, 40:60, 5:25] = 1
    labels = torch.tensor([1, 0, 1, 0])
    return images, masks, labels


def _model(tiny_backbone, **overrides):
    torch.manual_seed(0)
    return build_method("wmoeclip", tiny_backbone, overrides)


def _losses(model, images, masks, labels):
    return model(images, ["bottle"] * len(images), masks=masks, labels=labels).losses


def test_inference_outputs_are_in_range_and_deterministic(tiny_backbone):
    model = _model(tiny_backbone).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        first = model(images, ["bottle"] * 4)
        second = model(images, ["bottle"] * 4)
    assert first.anomaly_map.shape == (4, 64, 64) and first.pred_score.shape == (4,)
    assert 0 <= float(first.anomaly_map.min()) and float(first.anomaly_map.max()) <= 1
    assert 0 <= float(first.pred_score.min()) and float(first.pred_score.max()) <= 1
    assert torch.equal(first.anomaly_map, second.anomaly_map)  # z = mu at inference
    assert torch.equal(first.pred_score, second.pred_score)
    assert first.losses == {}


def test_training_samples_the_prompt_shift(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, _, _ = _batch()
    with torch.no_grad():
        first = model(images, ["bottle"] * 4)
        second = model(images, ["bottle"] * 4)
    assert not torch.allclose(first.anomaly_map, second.anomaly_map)
    model.eval()
    with torch.no_grad():
        with_mean = model(images, ["bottle"] * 4)
        model.vae.train()  # sampling only in the VAE changes the outputs
        sampled = model(images, ["bottle"] * 4)
    assert not torch.allclose(with_mean.pred_score, sampled.pred_score)


def test_score_fuses_the_expert_probability_with_the_map_maximum(tiny_backbone):
    model = _model(tiny_backbone).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        output = model(images, ["bottle"] * 4)
    classification = 2 * output.pred_score - output.anomaly_map.flatten(1).amax(dim=1)
    assert float(classification.min()) >= -1e-6 and float(classification.max()) <= 1 + 1e-6
    (key, routing), = output.routing.items()
    assert key == "context/samoe" and routing.grid == (1, 1)  # one decision per image
    assert routing.topk_index.shape == (4, 1, 2) and routing.expert_outputs.shape == (4, 1, 8, 32)
    assert torch.allclose(routing.topk_weight.sum(dim=-1), torch.ones(4, 1))


def test_every_loss_is_returned_finite_and_weighted(tiny_backbone):
    images, masks, labels = _batch()
    model = _model(tiny_backbone).train()
    torch.manual_seed(5)
    losses = _losses(model, images, masks, labels)
    assert set(losses) == LOSS_NAMES
    assert all(torch.isfinite(value) and value >= 0 for value in losses.values())
    assert losses["kl"] > 0 and losses["rec"] > 0
    doubled = _model(tiny_backbone, kl_weight=0.02, rec_weight=2.0, focal_weight=2.0).train()
    torch.manual_seed(5)
    twice = _losses(doubled, images, masks, labels)
    for name in ("kl", "rec", "focal"):
        assert torch.allclose(twice[name], 2 * losses[name], rtol=1e-5), name
    assert torch.allclose(twice["dice"], losses["dice"], rtol=1e-5)


def test_focal_and_dice_read_the_final_map_once(tiny_backbone):
    # spec Losses: focal + Dice on the final map (the mean over the taps), not one term per
    # tap (which weighs segmentation 4x against BCE, KL and rec); the per-tap sum is a setting.
    images, masks, labels = _batch()
    model = _model(tiny_backbone, ctds=False, smoothing_sigma=0.0).train()
    output = model(images, ["bottle"] * 4, masks=masks, labels=labels)
    final = output.anomaly_map  # the mean abnormal probability over the taps, unsmoothed
    target = masks[:, 0].long()
    expected_focal = focal_loss(torch.stack((1 - final, final), dim=1), target)
    assert torch.allclose(output.losses["focal"], expected_focal, atol=1e-5)
    assert torch.allclose(output.losses["dice"], dice_loss(final, target.float()), atol=1e-5)
    assert WMoEClipConfig().per_tap_segmentation_loss is False
    per_tap = _model(tiny_backbone, ctds=False, smoothing_sigma=0.0, per_tap_segmentation_loss=True).train()
    summed = per_tap(images, ["bottle"] * 4, masks=masks, labels=labels).losses
    assert summed["dice"].item() > 2 * output.losses["dice"].item()  # 4 taps, each about the final map's


def test_classification_loss_is_the_bce_of_the_abnormal_probability(tiny_backbone):
    model = _model(tiny_backbone, ctds=False).train()
    images, _, labels = _batch()
    output = model(images, ["bottle"] * 4, labels=labels)
    with torch.no_grad():
        model.eval()
        classification = 2 * model(images, ["bottle"] * 4).pred_score
        classification = classification - model(images, ["bottle"] * 4).anomaly_map.flatten(1).amax(dim=1)
    expected = torch.nn.functional.binary_cross_entropy(classification.clamp(1e-6, 1 - 1e-6), labels.float())
    assert torch.allclose(output.losses["bce"], expected, atol=1e-4)


def test_unknown_masks_and_labels_are_left_out(tiny_backbone):
    model = _model(tiny_backbone, ctds=False).train()
    images, masks, labels = _batch()
    masks[1:] = -1
    partial = _losses(model, images, masks, torch.tensor([1, -1, -1, -1]))
    alone = _losses(model, images[:1], masks[:1], labels[:1])
    for name in ("focal", "dice", "bce"):
        assert torch.allclose(partial[name], alone[name], atol=1e-5), name
    nothing = _losses(model, images, torch.full_like(masks, -1), torch.full_like(labels, -1))
    assert float(nothing["focal"]) == 0 and float(nothing["bce"]) == 0


def test_gradients_reach_every_trainable_part_and_never_clip(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 4, masks=masks, labels=labels)
    sum(output.losses.values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    chosen = set(output.routing["context/samoe"].topk_index.flatten().tolist())
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        expert = name.split(".")[2] if name.startswith("moe.experts.") else None
        reached = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        # an expert that no image routed to carries no weight and gets no gradient
        assert reached == (expert is None or int(expert) in chosen), name
    groups = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert groups == {"prompts", "vae", "prompt_shift", "wcma", "adapters", "moe"}


def test_one_adam_step_lowers_the_loss(tiny_backbone):
    model = _model(tiny_backbone).train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images, masks, labels = _batch()

    def total():
        torch.manual_seed(7)  # the same VAE noise for both evaluations
        return sum(_losses(model, images, masks, labels).values())

    first = total()
    optimiser.zero_grad()
    first.backward()
    optimiser.step()
    assert total() < first


@pytest.mark.parametrize(
    "overrides, modules, losses",
    [
        ({"ctds": False, "wcma": False, "samoe": False}, set(), {"focal", "dice", "bce"}),
        ({"wcma": False, "samoe": False}, {"vae"}, {"focal", "dice", "bce", "kl", "rec"}),
        ({"samoe": False}, {"vae", "wcma"}, {"focal", "dice", "bce", "kl", "rec"}),
        ({"wcma": False}, {"vae", "moe"}, LOSS_NAMES),
        ({"balance_loss": False}, {"vae", "wcma", "moe"}, LOSS_NAMES - {"balance"}),
        ({"taps": [2, 4], "num_experts": 4, "top_k": 1, "prompt_length": 3, "vv_path": True}, {"vae", "wcma", "moe"}, LOSS_NAMES),
    ],
)
def test_every_ablation_builds_and_trains(tiny_backbone, overrides, modules, losses):
    model = _model(tiny_backbone, **overrides).train()
    for module in ("vae", "wcma", "moe"):
        assert (getattr(model, module) is not None) == (module in modules), module
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 4, masks=masks, labels=labels)
    assert set(output.losses) == losses
    sum(output.losses.values()).backward()
    assert model.prompts.tokens.grad is not None and model.prompts.tokens.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="top_k"):
        WMoEClipConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="temperature"):
        WMoEClipConfig(temperature=0.0)
    with pytest.raises(ValueError, match="kl_weight"):
        WMoEClipConfig(kl_weight=-1.0)
    with pytest.raises(ValueError, match="unknown WMoEClipConfig fields"):
        WMoEClipConfig.from_dict({"wavelet": "db2"})


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    common = {"backbone": "zsad-tiny", "weights": "random", "image_size": 64}
    torch.manual_seed(11)
    detector = build_detector("wmoeclip", **common, method_config={"adapter_dim": 16}, for_training=True).eval()
    with torch.no_grad():  # every saved tensor differs from a fresh build
        for parameter in detector.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
    _, config = read_checkpoint(path)
    assert config["method"] == "wmoeclip" and config["method_config"]["adapter_dim"] == 16
    torch.manual_seed(11)  # the same random backbone as the saved model's
    rebuilt = build_detector(checkpoint=path).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        before, after = detector(images, ["object"] * 4), rebuilt(images, ["object"] * 4)
    assert torch.equal(before.anomaly_map, after.anomaly_map)
    assert torch.equal(before.pred_score, after.pred_score)
