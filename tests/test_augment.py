"""zsad.data.augment: per-item draws, their tensor encoding and the batched device augmentation,
held to torchvision's per-image ops (the reference the training augmentation used to run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from zsad.data.augment import (
    AugmentDraw,
    AugmentParams,
    AugmentSampler,
    augment_batch,
    hsv_to_rgb,
    jitter_colours,
    rgb_to_hsv,
)
from zsad.data.transforms import EvalTransform, ResizeTransform, clip_normalize, unit_range

SIZES = (16, 17)  # even and odd: the centre is a pixel corner or a pixel centre


def scene(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 RGB image (3, S, S) and a blob mask (1, S, S) in {0, 1}."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[:, size // 5 : size // 2, size // 3 : size - 2] = 1
    return image, mask


def augment_one(image: torch.Tensor, mask: torch.Tensor, draw: AugmentDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image (3, S, S) and mask through the batched op as a batch of one: float
    [0, 1] image and uint8 mask."""
    images, masks = augment_batch(image[None], mask[None], AugmentParams.stack([draw.encode()]))
    return images[0], masks[0]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("size", SIZES)
def test_identity_choices_return_the_input_exactly(size):
    image, mask = scene(size)
    out_image, out_mask = augment_one(image, mask, AugmentDraw())
    assert torch.equal(out_image, unit_range(image)) and torch.equal(out_mask, mask)
    assert out_mask.dtype == torch.uint8


def test_identity_on_the_device_path_equals_the_eval_transform():
    """uint8 -> [0, 1] -> augment (nothing fires) -> CLIP normalisation is bit for bit
    what evaluation feeds the model."""
    array = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), dtype=bool)
    mask[5:20, 10:30] = True
    pil = Image.fromarray(array)
    image_u8, mask_u8 = ResizeTransform(24)(pil, mask)
    assert image_u8.dtype == torch.uint8 and mask_u8.dtype == torch.uint8
    images, masks = augment_batch(image_u8[None], mask_u8[None], AugmentParams.stack([AugmentDraw().encode()]))
    expected_image, expected_mask = EvalTransform(24)(pil, mask)
    assert torch.equal(clip_normalize(images)[0], expected_image)
    assert torch.equal(masks[0].float(), expected_mask)


@pytest.mark.parametrize("size", SIZES)
def test_flips_equal_torchvision_exactly(size):
    image, mask = scene(size)
    pixels = unit_range(image)
    for draw, flip in [
        (AugmentDraw(hflip=True), TF.horizontal_flip),
        (AugmentDraw(vflip=True), TF.vertical_flip),
        (AugmentDraw(hflip=True, vflip=True), lambda t: TF.vertical_flip(TF.horizontal_flip(t))),
    ]:
        out_image, out_mask = augment_one(image, mask, draw)
        assert torch.equal(out_image, flip(pixels)) and torch.equal(out_mask, flip(mask)), draw


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shift", [(5, 2), (-3, 4), (0, -6)])
def test_whole_pixel_translations_equal_torchvision_exactly(size, shift):
    image, mask = scene(size)
    out_image, out_mask = augment_one(image, mask, AugmentDraw(translate=shift))
    options = dict(angle=0.0, translate=list(shift), scale=1.0, shear=[0.0, 0.0], fill=0)
    # torchvision's float grid is off by ~1e-6 at odd sizes; on uint8 it rounds, so compare there.
    assert torch.equal(to_uint8(out_image), TF.affine(image, interpolation=InterpolationMode.BILINEAR, **options))
    assert torch.equal(out_mask, TF.affine(mask, interpolation=InterpolationMode.NEAREST, **options))
    # And exactly the shifted input in float, black where nothing moved in.
    dx, dy = shift
    expected = torch.roll(unit_range(image), shifts=(dy, dx), dims=(1, 2))
    rows = torch.arange(size).view(size, 1) - dy
    columns = torch.arange(size).view(1, size) - dx
    inside = (rows >= 0) & (rows < size) & (columns >= 0) & (columns < size)
    assert torch.equal(out_image, torch.where(inside, expected, torch.zeros(())))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("angle", "turns"), [(90.0, 1), (-90.0, -1), (180.0, 2), (270.0, 3)])
def test_quarter_turns_equal_rot90_exactly(size, angle, turns):
    """Rotation is about the centre ((S - 1) / 2, (S - 1) / 2) in pixel indices, so a
    quarter turn maps pixel centres onto pixel centres: exactly torch.rot90 (counter-
    clockwise for positive angles, as torchvision), with no sub-pixel shift."""
    image, mask = scene(size)
    out_image, out_mask = augment_one(image, mask, AugmentDraw(angle=angle))
    assert torch.equal(out_image, torch.rot90(unit_range(image), turns, dims=(1, 2)))
    assert torch.equal(out_mask, torch.rot90(mask, turns, dims=(1, 2)))
    torch.testing.assert_close(out_image, TF.rotate(unit_range(image), angle, interpolation=InterpolationMode.BILINEAR),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("angle", [23.0, -17.5])
def test_general_rotation_matches_torchvision_in_the_interior(size, angle):
    image, mask = scene(size)
    pixels = unit_range(image)
    out_image, out_mask = augment_one(image, mask, AugmentDraw(angle=angle))
    reference = TF.rotate(pixels, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
    interior = (slice(None), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(out_image[interior], reference[interior], atol=1e-5, rtol=0)
    assert not torch.equal(out_image, pixels)
    reference_mask = TF.rotate(mask, angle, interpolation=InterpolationMode.NEAREST, fill=0)
    assert (out_mask != reference_mask).sum() <= 2  # a tie in rounding may go either way


def test_translate_then_rotate_then_flip_is_one_resampling_of_their_composition():
    """The composed map equals torchvision's three steps where those are exact: a whole-
    pixel shift, a quarter turn, a flip (here compared on uint8, where torchvision rounds)."""
    image, mask = scene(16)
    draw = AugmentDraw(translate=(3, -2), angle=90.0, hflip=True)
    out_image, out_mask = augment_one(image, mask, draw)
    options = dict(angle=0.0, translate=[3, -2], scale=1.0, shear=[0.0, 0.0], fill=0)
    expected = TF.horizontal_flip(torch.rot90(TF.affine(image, interpolation=InterpolationMode.BILINEAR, **options), 1, (1, 2)))
    expected_mask = TF.horizontal_flip(torch.rot90(TF.affine(mask, interpolation=InterpolationMode.NEAREST, **options), 1, (1, 2)))
    assert torch.equal(to_uint8(out_image), expected) and torch.equal(out_mask, expected_mask)


def test_masks_stay_binary_and_on_the_image_content():
    """Augment an image whose content IS the mask: wherever the bilinear image is
    unambiguous (all its neighbours 1, or all 0) the nearest mask agrees, for any draw."""
    size = 48
    _, mask = scene(size)
    mask[:, 30:40, 5:12] = 1  # a second region near a corner
    image = mask.expand(3, -1, -1) * 255
    sampler = AugmentSampler(size, p=0.7, jitter=(0.0, 0.0, 0.0, 0.0))
    generator = torch.Generator().manual_seed(5)
    moved = 0
    for _ in range(30):
        out_image, out_mask = augment_one(image, mask, sampler.draw(generator))
        assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 1}
        brightness = out_image[0]
        assert bool((out_mask[0][brightness > 1 - 1e-6] == 1).all())
        assert bool((out_mask[0][brightness < 1e-6] == 0).all())
        ambiguous = ((brightness > 1e-6) & (brightness < 1 - 1e-6)).sum()
        assert ambiguous <= 4 * size * 2  # only along the region borders
        moved += int(not torch.equal(out_mask, mask))
    assert moved > 20


# ---------------------------------------------------------------- colour


def jitter_of(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0) -> torch.Tensor:
    return torch.tensor([[brightness, contrast, saturation, hue]], dtype=torch.float32)


def torchvision_jitter(image: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    brightness, contrast, saturation, hue = factors.tolist()
    image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, brightness), contrast), saturation)
    return TF.adjust_hue(image, hue) if hue != 0 else image


@pytest.mark.parametrize(
    "factors",
    [
        dict(brightness=1.3), dict(brightness=0.6), dict(contrast=1.4), dict(contrast=0.5),
        dict(saturation=1.5), dict(saturation=0.3), dict(hue=0.2), dict(hue=-0.45),
        dict(brightness=1.2, contrast=0.8, saturation=1.1, hue=0.1),
    ],
)
def test_colour_jitter_equals_torchvision_on_float_images(factors):
    image = unit_range(scene(20, seed=1)[0])
    jitter = jitter_of(**factors)
    out = jitter_colours(image[None], jitter, shifts_hue=factors.get("hue", 0.0) != 0)[0]
    torch.testing.assert_close(out, torchvision_jitter(image, jitter[0]), atol=1e-5, rtol=0)
    assert not torch.equal(out, image)


def test_colour_jitter_identity_factors_change_nothing_and_geometry_leaves_colours_alone():
    image_u8, mask = scene(20, seed=2)
    image = unit_range(image_u8)[None]
    assert torch.equal(jitter_colours(image, jitter_of(), shifts_hue=True), image)
    jittered = AugmentParams.stack([AugmentDraw(jitter=(1.3, 0.9, 1.1, 0.0)).encode()])
    out_image, out_mask = augment_batch(image_u8[None], mask[None], jittered)
    assert torch.equal(out_mask[0], mask) and not torch.equal(out_image, image)


def test_hsv_conversion_round_trips_and_knows_the_primaries():
    image = unit_range(scene(20, seed=3)[0])[None]
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(image)), image, atol=1e-6, rtol=0)
    primaries = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5], [0, 0, 0]]).T.reshape(1, 3, 1, 5)
    hsv = rgb_to_hsv(primaries)[0, :, 0]
    torch.testing.assert_close(hsv[0], torch.tensor([0.0, 1 / 3, 2 / 3, 0.0, 0.0]))
    torch.testing.assert_close(hsv[1], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(hsv[2], torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0]))


# ---------------------------------------------------------------- the batch


def test_each_image_of_a_batch_gets_its_own_choices():
    first, first_mask = scene(18, seed=0)
    second, second_mask = scene(18, seed=1)
    draws = [
        AugmentDraw(translate=(2, -1), angle=12.0, hflip=True, jitter=(1.2, 0.9, 1.1, 0.05)),
        AugmentDraw(angle=-25.0, vflip=True, jitter=(0.8, 1.2, 0.7, 0.0)),
    ]
    images = torch.stack([first, second])
    masks = torch.stack([first_mask, second_mask])
    together = augment_batch(images, masks, AugmentParams.stack([draw.encode() for draw in draws]))
    for index, draw in enumerate(draws):
        alone = augment_one(images[index], masks[index], draw)
        torch.testing.assert_close(together[0][index], alone[0], atol=1e-6, rtol=0)
        assert torch.equal(together[1][index], alone[1])
    assert not torch.equal(together[1][0], together[1][1])


def test_batched_op_on_cuda_equals_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (the GPU machine runs it)")
    sampler = AugmentSampler(64, p=0.8, jitter=(0.2, 0.2, 0.2, 0.1))
    generator = torch.Generator().manual_seed(0)
    pairs = [scene(64, seed=seed) for seed in range(4)]
    images = torch.stack([image for image, _ in pairs])
    masks = torch.stack([mask for _, mask in pairs])
    params = AugmentParams.stack([sampler.draw(generator).encode() for _ in pairs])
    on_cpu = augment_batch(images, masks, params)
    on_gpu = augment_batch(images.cuda(), masks.cuda(), params.to(torch.device("cuda")))
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-5, rtol=0)
    assert (on_gpu[1].cpu() != on_cpu[1]).sum() <= 4  # a rounding tie may fall either way


def test_augment_batch_refuses_mismatched_counts():
    image, mask = scene(8)
    params = AugmentParams.stack([AugmentDraw().encode()] * 2)
    with pytest.raises(ValueError, match="2 parameter sets"):
        augment_batch(image[None], mask[None], params)
    with pytest.raises(ValueError, match="empty"):
        AugmentParams.stack([])
    with pytest.raises(ValueError, match="uint8 RGB"):
        augment_batch(unit_range(image[None]), mask[None], AugmentParams.stack([AugmentDraw().encode()]))


# ---------------------------------------------------------------- the draws


def test_draws_depend_on_the_generator_only():
    sampler = AugmentSampler(64)
    first = [sampler.draw(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    other = [sampler.draw(generator) for generator in [torch.Generator().manual_seed(8)] for _ in range(5)]
    assert any(draw != first[0] for draw in other)
    encoded = first[0].encode()
    assert encoded.geometry.shape == (2, 3) and encoded.jitter.shape == (4,) and encoded.geometry.dtype == torch.float32


def test_each_op_fires_with_probability_p_within_its_limits():
    sampler = AugmentSampler(64, p=0.3, jitter=(0.2, 0.2, 0.2, 0.1))
    generator = torch.Generator().manual_seed(0)
    draws = [sampler.draw(generator) for _ in range(4000)]
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
    jitters = np.array([d.jitter for d in draws if d.jitter is not None])
    assert np.abs(shifts).max() <= round(limit) and np.abs(shifts).max() >= limit - 1
    assert np.abs(angles).max() <= 30 and np.abs(angles).max() > 25
    assert (np.abs(jitters[:, :3] - 1) <= 0.2).all() and (np.abs(jitters[:, 3]) <= 0.1).all()
    params = AugmentParams.stack([d.encode() for d in draws[:50]])
    assert params.shifts_hue == any(d.jitter is not None and d.jitter[3] != 0 for d in draws[:50])


def test_invalid_sampler_arguments_raise():
    with pytest.raises(ValueError, match="p must be"):
        AugmentSampler(32, p=1.5)
    with pytest.raises(ValueError, match="hue"):
        AugmentSampler(32, jitter=(0.2, 0.2, 0.2, 0.7))
    with pytest.raises(ValueError, match="image_size"):
        AugmentSampler(0)
