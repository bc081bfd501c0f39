"""zsad.data.transforms: eval resize/normalise and the joint train augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    AugmentParams,
    EvalTransform,
    TrainAugment,
    normalize_image,
    resize_image,
    resize_mask,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)
NO_OP = AugmentParams(translate=None, angle=None, hflip=False, vflip=False, jitter=None)


def denormalise(image: torch.Tensor) -> torch.Tensor:
    return image * STD + MEAN


def square_scene(size: int = 64) -> tuple[Image.Image, np.ndarray]:
    """Black image with a bright off-centre square and the square's mask."""
    array = np.zeros((size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[10:26, 36:52] = True
    array[mask] = 255
    return Image.fromarray(array), mask


def test_clip_constants_are_openai_values():
    assert CLIP_MEAN == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert CLIP_STD == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def test_eval_transform_normalises_a_flat_colour_exactly():
    image = Image.new("RGB", (50, 30), (255, 128, 0))
    tensor, mask = EvalTransform(16)(image, None)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    expected = (torch.tensor([255, 128, 0]) / 255.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(tensor[:, 5, 5], expected)
    assert mask.shape == (1, 16, 16) and mask.dtype == torch.float32 and mask.sum() == 0


def test_eval_transform_squashes_without_cropping():
    array = np.zeros((40, 80, 3), dtype=np.uint8)
    array[:, 70:] = 255  # a bright band at the right edge of a wide image
    mask = np.zeros((40, 80), dtype=bool)
    mask[:, :40] = True
    image, resized_mask = EvalTransform(20)(Image.fromarray(array), mask)
    bright = denormalise(image)[0]
    assert bright[:, -2:].min() > 0.9 and bright[:, :15].max() < 0.05
    assert set(resized_mask.unique().tolist()) == {0.0, 1.0}
    assert resized_mask[0, :, :10].all() and not resized_mask[0, :, 10:].any()


def test_train_augment_is_deterministic_given_a_seed():
    image, mask = square_scene()
    first = TrainAugment(64, seed=7)(image, mask)
    again = TrainAugment(64, seed=7)(image, mask)
    other = TrainAugment(64, seed=8)
    torch.testing.assert_close(first[0], again[0])
    torch.testing.assert_close(first[1], again[1])
    differs = any(not torch.equal(other(image, mask)[0], first[0]) for _ in range(5))
    assert differs


def test_each_op_fires_with_probability_p():
    augment = TrainAugment(64, p=0.3, seed=0)
    draws = [augment.sample_params() for _ in range(4000)]
    rates = {
        "translate": np.mean([d.translate is not None for d in draws]),
        "rotate": np.mean([d.angle is not None for d in draws]),
        "hflip": np.mean([d.hflip for d in draws]),
        "vflip": np.mean([d.vflip for d in draws]),
        "jitter": np.mean([d.jitter is not None for d in draws]),
    }
    for name, rate in rates.items():
        assert abs(rate - 0.3) < 0.03, (name, rate)
    limit = 0.15 * 64
    shifts = np.array([d.translate for d in draws if d.translate is not None])
    angles = np.array([d.angle for d in draws if d.angle is not None])
    assert np.abs(shifts).max() <= round(limit) and np.abs(shifts).max() >= limit - 1
    assert np.abs(angles).max() <= 30 and np.abs(angles).max() > 25


def test_joint_geometry_keeps_the_mask_on_the_bright_square():
    image, mask = square_scene()
    augment = TrainAugment(64, p=0.7, seed=3)
    moved = 0
    for _ in range(40):
        params = augment.sample_params()
        out_image, out_mask = augment.apply(resize_image(image, 64), resize_mask(mask, 64), params)
        brightness = out_image.float().mean(0)
        bright = brightness > 0.5 * brightness.max()  # jitter may scale the square's brightness
        inside = out_mask[0].bool()
        assert inside.sum() > 100  # the square never leaves the frame with these limits
        iou = (bright & inside).sum() / (bright | inside).sum()
        assert iou > 0.9, (params, iou)
        moved += int(not torch.equal(out_mask, resize_mask(mask, 64)))
    assert moved > 20


def test_translate_and_flips_move_image_and_mask_together():
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    mask = torch.zeros(1, 16, 16, dtype=torch.uint8)
    image[:, 4, 3] = 255
    mask[:, 4, 3] = 1
    shifted = AugmentParams(translate=(5, 2), angle=None, hflip=False, vflip=False, jitter=None)
    out_image, out_mask = TrainAugment.apply(image, mask, shifted)
    assert out_image[0, 6, 8] == 255 and out_mask[0, 6, 8] == 1 and out_mask.sum() == 1
    flipped = AugmentParams(translate=None, angle=None, hflip=True, vflip=True, jitter=None)
    out_image, out_mask = TrainAugment.apply(image, mask, flipped)
    assert out_image[0, 11, 12] == 255 and out_mask[0, 11, 12] == 1


def test_colour_jitter_changes_the_image_only():
    image, mask = square_scene()
    image_u8, mask_u8 = resize_image(image, 64), resize_mask(mask, 64)
    grey = (image_u8 // 2).clone()  # mid-grey square so brightness can go both ways
    jitter = AugmentParams(translate=None, angle=None, hflip=False, vflip=False, jitter=(1.3, 0.9, 1.1, 0.0))
    out_image, out_mask = TrainAugment.apply(grey, mask_u8, jitter)
    assert not torch.equal(out_image, grey)
    assert torch.equal(out_mask, mask_u8)


def test_p_zero_equals_eval_transform():
    image, mask = square_scene()
    augmented = TrainAugment(32, p=0.0, seed=1)(image, mask)
    evaluated = EvalTransform(32)(image, mask)
    torch.testing.assert_close(augmented[0], evaluated[0])
    torch.testing.assert_close(augmented[1], evaluated[1])
    ones_image, ones_mask = torch.ones(3, 4, 4, dtype=torch.uint8), torch.ones(1, 4, 4, dtype=torch.uint8)
    out_image, out_mask = TrainAugment.apply(ones_image, ones_mask, NO_OP)
    assert torch.equal(out_image, ones_image) and torch.equal(out_mask, ones_mask)


def test_normalize_image_maps_mean_colour_to_zero():
    mean_colour = (torch.tensor(CLIP_MEAN) * 255).round().to(torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    assert normalize_image(mean_colour).abs().max() < 0.01


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        EvalTransform(0)
    with pytest.raises(ValueError):
        TrainAugment(32, p=1.5)
