"""zsad.data.transforms: the resize to S x S and CLIP normalisation (augmentation: test_augment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    EvalTransform,
    ResizeTransform,
    clip_normalize,
    normalize_image,
    unit_range,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


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


def test_resize_transform_keeps_uint8_and_eval_is_its_normalisation():
    image, mask = square_scene()
    resized, resized_mask = ResizeTransform(32)(image, mask)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 32, 32)
    assert resized_mask.dtype == torch.uint8 and set(resized_mask.unique().tolist()) == {0, 1}
    evaluated, evaluated_mask = EvalTransform(32)(image, mask)
    assert torch.equal(evaluated, normalize_image(resized)) and torch.equal(evaluated_mask, resized_mask.float())
    assert torch.equal(normalize_image(resized), clip_normalize(unit_range(resized)))
    batch = torch.stack([resized, resized.flip(-1)])
    assert torch.equal(normalize_image(batch)[1], normalize_image(resized.flip(-1)))  # batched: per image
    assert unit_range(resized).max() <= 1.0 and unit_range(resized).dtype == torch.float32


def test_unit_range_is_torchvisions_uint8_scaling_bit_for_bit():
    import torchvision.transforms.v2.functional as F

    values = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16)
    assert torch.equal(unit_range(values), F.to_dtype(values, torch.float32, scale=True))
    assert unit_range(values)[0, 15, 15] == 1.0 and unit_range(values)[0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="uint8"):
        unit_range(values.float())


def test_normalize_image_maps_mean_colour_to_zero():
    mean_colour = (torch.tensor(CLIP_MEAN) * 255).round().to(torch.uint8).view(3, 1, 1).expand(3, 2, 2)
    assert normalize_image(mean_colour).abs().max() < 0.01


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        EvalTransform(0)
    with pytest.raises(ValueError):
        ResizeTransform(-1)
