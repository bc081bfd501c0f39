"""Tests of the shared losses (focal, Dice, their sum over maps, image cross-entropy)."""

import math

import pytest
import torch
import torch.nn.functional as F

from zsad.losses import dice_loss, focal_loss, image_classification_loss, segmentation_loss


def _two_pixel_case() -> tuple[torch.Tensor, torch.Tensor]:
    # Pixel 0: true class 1, predicted p(1) = 0.8. Pixel 1: true class 0, predicted p(0) = 0.3.
    probs = torch.tensor([[0.2, 0.8], [0.3, 0.7]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    return probs, target


def test_focal_loss_matches_hand_computed_value():
    probs, target = _two_pixel_case()
    # (1 - 0.8)^2 * -ln(0.8) = 0.04 * 0.2231436 ; (1 - 0.3)^2 * -ln(0.3) = 0.49 * 1.2039728
    expected = (0.04 * 0.2231436 + 0.49 * 1.2039728) / 2
    assert focal_loss(probs, target).item() == pytest.approx(expected, abs=1e-6)


def test_focal_loss_gamma_zero_is_nll():
    generator = torch.Generator().manual_seed(0)
    probs = torch.randn(2, 2, 5, 6, generator=generator).softmax(dim=1)
    target = torch.randint(0, 2, (2, 5, 6), generator=generator)
    expected = F.nll_loss(probs.log(), target)
    assert torch.allclose(focal_loss(probs, target, gamma=0.0), expected, atol=1e-6)


def test_focal_loss_down_weights_easy_pixels():
    probs, target = _two_pixel_case()
    assert focal_loss(probs, target, gamma=2.0) < focal_loss(probs, target, gamma=0.0)


def test_focal_loss_rejects_float_masks_and_bad_shapes():
    probs, target = _two_pixel_case()
    with pytest.raises(TypeError):
        focal_loss(probs, target.float())
    with pytest.raises(ValueError):
        focal_loss(probs, target[:, :, :1])


def test_focal_loss_gradient_is_finite_at_saturated_probabilities():
    probs = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 1]]])  # pixel 0 is completely wrong, pixel 1 perfect
    loss = focal_loss(probs, target)
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(1e-6) / 2, rel=1e-5)
    assert torch.isfinite(probs.grad).all()


def test_dice_loss_is_zero_for_perfect_prediction():
    target = torch.zeros(2, 4, 4)
    target[0, 1:3, 1:3] = 1
    assert dice_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-7)
    # Exact Eq. B.4 (eps = 0) is defined only where mask or prediction is non-empty.
    assert dice_loss(target[:1].clone(), target[:1], eps=0.0).item() == pytest.approx(0.0, abs=1e-7)


def test_dice_loss_hand_case_without_and_with_smoothing():
    prob = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    # |A ∩ B| = 1.5, |A| = 1.5, |B| = 2: 1 - 2 * 1.5 / 3.5 = 1/7 ; smoothed: 1 - 4 / 4.5 = 1/9
    assert dice_loss(prob, target, eps=0.0).item() == pytest.approx(1 / 7, abs=1e-6)
    assert dice_loss(prob, target, eps=1.0).item() == pytest.approx(1 / 9, abs=1e-6)


def test_dice_loss_is_averaged_per_image():
    prob = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    target = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 1]]])
    # image 0: 1/7, image 1: perfect -> 0; mean over images = 1/14 (a pooled Dice would give 1/11)
    assert dice_loss(prob, target, eps=0.0).item() == pytest.approx(1 / 14, abs=1e-6)


def test_dice_loss_empty_mask_and_empty_prediction_is_zero_with_smoothing():
    assert dice_loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)).item() == 0.0
    with pytest.raises(ValueError):
        dice_loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 4))


def _random_maps(count: int, batch: int = 3, size: int = 8) -> list[torch.Tensor]:
    return [torch.rand(batch, 2, size, size).softmax(dim=1) for _ in range(count)]


def test_segmentation_loss_sums_focal_and_dice_over_the_known_masks():
    torch.manual_seed(0)
    maps = _random_maps(2)
    masks = (torch.rand(3, 1, 8, 8) > 0.7).float()
    masks[1] = -1  # no pixel label: must add nothing
    target = masks[[0, 2], 0].long()
    expected = sum(focal_loss(p[[0, 2]], target) + dice_loss(p[[0, 2], 1], target.float()) for p in maps)
    assert torch.allclose(segmentation_loss(maps, masks), expected)
    changed = [p.clone() for p in maps]
    changed[0][1] = changed[0][1].flip(0)  # another prediction for the unlabelled image
    assert torch.equal(segmentation_loss(changed, masks), segmentation_loss(maps, masks))


def test_segmentation_loss_is_zero_without_any_mask():
    loss = segmentation_loss(_random_maps(1), -torch.ones(3, 1, 8, 8))
    assert loss.item() == 0 and torch.isfinite(loss)


def test_image_classification_loss_skips_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    labels = torch.tensor([0, -1, 1])
    expected = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(image_classification_loss(logits, labels), expected)
    assert image_classification_loss(logits, -torch.ones(3, dtype=torch.long)).item() == 0


def test_segmentation_loss_of_stacked_maps_equals_the_sum_over_maps():
    """A (B, M, 2, H, W) tensor gives the sum over its M maps of the per-map losses, on
    the images with a known mask only."""
    torch.manual_seed(0)
    anomalous = torch.rand(3, 4, 8, 8)
    maps = torch.stack((1 - anomalous, anomalous), dim=2)  # (B, M, 2, H, W)
    masks = (torch.rand(3, 1, 8, 8) > 0.7).float()
    masks[1] = -1  # unknown mask
    expected = segmentation_loss([maps[:, index] for index in range(4)], masks)
    assert torch.allclose(segmentation_loss(maps, masks), expected, atol=1e-5)
    assert float(segmentation_loss(maps, torch.full_like(masks, -1.0))) == 0.0


def _released_binary_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The released MoECLIP code's binary Dice, written out: 1 - the batch mean of
    (2 sum(p y) + 1) / (sum p + sum y + 1) per image."""
    per_image = [
        (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1) for p, y in zip(prob.flatten(1), target.flatten(1))
    ]
    return 1 - torch.stack(per_image).mean()


def test_two_term_dice_adds_the_normal_channel_against_the_complement():
    # MoECLIP's released loss: Dice(normal channel, 1 - mask) + Dice(abnormal channel, mask).
    torch.manual_seed(1)
    anomalous = torch.rand(3, 4, 8, 8)
    maps = torch.stack((1 - anomalous, anomalous), dim=2)  # (B, M, 2, H, W)
    masks = (torch.rand(3, 1, 8, 8) > 0.7).float()
    masks[1] = -1
    known, target = [0, 2], masks[[0, 2], 0]
    expected = sum(
        focal_loss(maps[known, m], target.long())
        + _released_binary_dice(maps[known, m, 0], 1 - target)
        + _released_binary_dice(maps[known, m, 1], target)
        for m in range(4)
    )
    listed = [maps[:, m] for m in range(4)]
    assert torch.allclose(segmentation_loss(listed, masks, dice_normal_channel=True), expected, atol=1e-5)
    assert torch.allclose(segmentation_loss(maps, masks, dice_normal_channel=True), expected, atol=1e-5)
    one_term = expected - sum(_released_binary_dice(maps[known, m, 0], 1 - target) for m in range(4))
    assert torch.allclose(segmentation_loss(maps, masks), one_term, atol=1e-5)
