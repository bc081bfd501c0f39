"""Training augmentation in two halves: per-item draws in the loading workers, one batched
operation on the training device.

A worker draws each item's random choices (:class:`AugmentSampler`, an
:class:`AugmentDraw`) and encodes them as tensors that collate (:class:`AugmentParams`):

* ``geometry`` (2, 3) float32: translate, rotation about the image centre and flips,
  composed into one inverse map. Coordinates are in pixels, x to the right, y down, with
  the origin at the image centre ((W - 1) / 2, (H - 1) / 2) in pixel indices: the output
  pixel at (x, y) reads the input at ``geometry @ (x, y, 1)``.
* ``jitter`` (4,) float32: brightness, contrast and saturation factors (1: unchanged) and
  the hue shift in turns (0: unchanged).

On the device :func:`augment_batch` resamples the whole uint8 batch in one pass
(bilinear for the images, giving floats in [0, 1], nearest for the masks, zeros outside
the input) and then applies the colour jitter to each image with its own factors
(torchvision's definitions, on floats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .transforms import UINT8_TO_UNIT

__all__ = [
    "AugmentDraw",
    "AugmentParams",
    "AugmentSampler",
    "augment_batch",
    "grey",
    "hsv_to_rgb",
    "jitter_colours",
    "rgb_to_hsv",
    "shift_hue",
    "source_coordinates",
    "warp",
]

# Luma weights of torchvision's rgb_to_grayscale (ITU-R 601-2), which its contrast and
# saturation adjustments blend with.
GREY_WEIGHTS = (0.2989, 0.587, 0.114)


@dataclass
class AugmentParams:
    """Augmentation choices as tensors: one item (no batch dimension) or a batch of B.

    Attributes:
        geometry: float32 ``(2, 3)`` / ``(B, 2, 3)``, the inverse map described in the
            module docstring.
        jitter: float32 ``(4,)`` / ``(B, 4)``: brightness, contrast, saturation, hue shift.
        shifts_hue: some hue shift is not 0 (known on the host, so the device skips the
            HSV round trip, which is not exact, without a sync when nothing needs it).
    """

    geometry: torch.Tensor
    jitter: torch.Tensor
    shifts_hue: bool

    @classmethod
    def stack(cls, items: list[AugmentParams]) -> AugmentParams:
        """The batch of the items' choices, in order."""
        if not items:
            raise ValueError("cannot stack an empty list of augmentation parameters")
        return cls(
            torch.stack([item.geometry for item in items]),
            torch.stack([item.jitter for item in items]),
            any(item.shifts_hue for item in items),
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> AugmentParams:
        return AugmentParams(
            self.geometry.to(device, non_blocking=non_blocking),
            self.jitter.to(device, non_blocking=non_blocking),
            self.shifts_hue,
        )

    def pin_memory(self) -> AugmentParams:
        return AugmentParams(self.geometry.pin_memory(), self.jitter.pin_memory(), self.shifts_hue)


@dataclass(frozen=True)
class AugmentDraw:
    """One item's random choices, readable (None / False: the op does not fire).

    The ops act in this order: translate by ``translate`` = (dx, dy) pixels, rotate by
    ``angle`` degrees counter-clockwise about the image centre, flip horizontally, flip
    vertically; then brightness, contrast, saturation and hue (``jitter``: three factors
    and a shift in turns, in [-0.5, 0.5]).
    """

    translate: tuple[int, int] | None = None
    angle: float | None = None
    hflip: bool = False
    vflip: bool = False
    jitter: tuple[float, float, float, float] | None = None

    def encode(self) -> AugmentParams:
        """The choices as tensors (see the module docstring)."""
        # Forward map of the content: q = Flip(Rotate(p + t)); the sampler needs its
        # inverse p = Rotate(-angle) Flip q - t (a flip is its own inverse).
        radians = math.radians(self.angle) if self.angle is not None else 0.0
        cos, sin = math.cos(radians), math.sin(radians)
        flip_x = -1.0 if self.hflip else 1.0
        flip_y = -1.0 if self.vflip else 1.0
        shift_x, shift_y = self.translate if self.translate is not None else (0, 0)
        geometry = torch.tensor(
            [[cos * flip_x, -sin * flip_y, -float(shift_x)], [sin * flip_x, cos * flip_y, -float(shift_y)]],
            dtype=torch.float64,
        ).float()
        jitter = self.jitter if self.jitter is not None else (1.0, 1.0, 1.0, 0.0)
        return AugmentParams(geometry, torch.tensor(jitter, dtype=torch.float32), jitter[3] != 0.0)


class AugmentSampler:
    """Draws the joint image/mask augmentation of one training item.

    Each of translate, rotate, horizontal flip, vertical flip and colour jitter fires
    independently with probability ``p``.

    Args:
        image_size: side ``S`` of the (square) training images.
        p: probability of each op.
        translate: largest shift as a fraction of ``S`` (per axis, rounded to pixels).
        degrees: largest rotation angle.
        jitter: ``(brightness, contrast, saturation, hue)`` strengths as in torchvision's
            ColorJitter (factors drawn from ``[1 - s, 1 + s]``; hue shift from ``[-h, h]``).
    """

    def __init__(
        self,
        image_size: int,
        p: float = 0.5,
        translate: float = 0.15,
        degrees: float = 30.0,
        jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.0),
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not 0.0 <= jitter[3] <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {jitter[3]}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.p = p
        self.translate = translate
        self.degrees = degrees
        self.jitter = tuple(float(j) for j in jitter)

    def draw(self, generator: torch.Generator) -> AugmentDraw:
        """One item's choices, drawn from ``generator`` only."""

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * torch.rand((), generator=generator).item()

        def fires() -> bool:
            return torch.rand((), generator=generator).item() < self.p

        translate = None
        if self.translate > 0 and fires():
            limit = self.translate * self.image_size
            translate = (round(uniform(-limit, limit)), round(uniform(-limit, limit)))
        angle = uniform(-self.degrees, self.degrees) if self.degrees > 0 and fires() else None
        hflip = fires()
        vflip = fires()
        jitter = None
        if any(self.jitter) and fires():
            brightness, contrast, saturation, hue = self.jitter
            jitter = (
                uniform(max(0.0, 1 - brightness), 1 + brightness),
                uniform(max(0.0, 1 - contrast), 1 + contrast),
                uniform(max(0.0, 1 - saturation), 1 + saturation),
                uniform(-hue, hue),
            )
        return AugmentDraw(translate, angle, hflip, vflip, jitter)


# ---------------------------------------------------------------- geometry


def source_coordinates(geometry: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output pixel reads the input: x and y, each float32 ``(B, H, W)`` in
    pixel indices, from ``geometry`` ``(B, 2, 3)``.

    Flips and whole-pixel shifts land exactly on pixel indices (every term is a small
    integer or half-integer), and so do quarter turns (cos 90 deg ~ 6e-17 vanishes when
    added to a pixel offset), so they resample without any interpolation error.
    """
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    options = dict(dtype=torch.float32, device=geometry.device)
    across = (torch.arange(width, **options) - centre_x).view(1, 1, width)
    down = (torch.arange(height, **options) - centre_y).view(1, height, 1)
    row = geometry.float()[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    x = row[:, 0, 0] * across + row[:, 0, 1] * down + (row[:, 0, 2] + centre_x)
    y = row[:, 1, 0] * across + row[:, 1, 1] * down + (row[:, 1, 2] + centre_y)
    return x, y


def _framed(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` inside a zero frame, 1 pixel left/top and 2 right/bottom (where
    clamped coordinates and their right/lower neighbours can fall): ``(B, C, H + 3, W + 3)``."""
    return F.pad(tensor, (1, 2, 1, 2))


def _packed_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(B, 3, H, W)`` in the zero frame with each pixel's three bytes (and a
    spare one) in one int32, so that one gather moves a whole pixel: ``(B, (H + 3) (W + 3))``."""
    pixels = F.pad(_framed(images).permute(0, 2, 3, 1), (0, 1)).contiguous()  # (B, H + 3, W + 3, 4)
    return pixels.view(torch.int32).flatten(1)


def _gather_pixels(packed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pixels of ``packed`` (:func:`_packed_pixels`) at the flat positions ``index``
    int64 ``(B, H, W)`` -> float32 ``(B, 3, H, W)`` in 0..255."""
    batch, height, width = index.shape
    gathered = packed.gather(1, index.view(batch, -1)).view(torch.uint8).view(batch, height, width, 4)
    return gathered[..., :3].permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)


def warp(images: torch.Tensor, masks: torch.Tensor, geometry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample every image (bilinear) and mask (nearest) of a batch with its own
    geometry, in one pass; zeros outside the input.

    Bilinear: the four pixels around each source point, blended by its fractional
    position (a point on a pixel index reads that pixel alone, exactly), then scaled to
    [0, 1] as :func:`~zsad.data.transforms.unit_range` scales. Nearest: the pixel at the
    rounded position (half to even, as grid_sample's nearest mode). Source points
    further than one pixel outside are clamped to one pixel outside, where every
    neighbour is the zero frame (or weighted 0), so nothing changes.

    Args:
        images: uint8 RGB ``(B, 3, H, W)``.
        masks: any dtype ``(B, 1, H, W)`` (kept: a uint8 mask stays uint8 in {0, 1}).
        geometry: ``(B, 2, 3)`` inverse maps (module docstring).

    Returns:
        images float32 ``(B, 3, H, W)`` in [0, 1]; masks of the given shape and dtype.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"warp takes uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if (height + 3) * (width + 3) > 2**24:
        raise ValueError(f"warp handles images up to 2**24 pixels with their frame, got {height} x {width}")
    x, y = source_coordinates(geometry.to(images.device), height, width)
    x, y = x.clamp(-1.0, float(width)), y.clamp(-1.0, float(height))
    stride = width + 3
    left, top = x.floor(), y.floor()
    right_weight, lower_weight = (x - left)[:, None], (y - top)[:, None]
    top_left = ((top + 1) * stride + (left + 1)).long()  # whole numbers below 2**24: exact in float32
    packed = _packed_pixels(images)
    upper_left, upper_right = _gather_pixels(packed, top_left), _gather_pixels(packed, top_left + 1)
    lower_left, lower_right = _gather_pixels(packed, top_left + stride), _gather_pixels(packed, top_left + stride + 1)
    # a + (b - a) w is exactly a when w = 0 (a point on a pixel index).
    upper = torch.addcmul(upper_left, upper_right.sub_(upper_left), right_weight)
    lower = torch.addcmul(lower_left, lower_right.sub_(lower_left), right_weight)
    resampled = torch.addcmul(upper, lower.sub_(upper), lower_weight).mul_(UINT8_TO_UNIT)
    nearest = ((y.round() + 1) * stride + (x.round() + 1)).long()
    framed_masks = _framed(masks).flatten(2)
    moved_masks = framed_masks.gather(2, nearest.view(len(masks), 1, -1)).view(masks.shape)
    return resampled, moved_masks


# ---------------------------------------------------------------- colour


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast over images."""
    return values.view(-1, 1, 1, 1)


def grey(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    red, green, blue = images.unbind(1)
    return (GREY_WEIGHTS[0] * red + GREY_WEIGHTS[1] * green + GREY_WEIGHTS[2] * blue).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * images + (1 - factor) * other`` per image, clamped to [0, 1]; factor (B,)."""
    weight = _per_image(factor)
    return (images * weight).add_(other * (1 - weight)).clamp_(0.0, 1.0)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` in [0, 1] -> HSV, hue in turns [0, 1); grey pixels get hue 0
    and black ones saturation 0."""
    red, green, blue = images.unbind(1)
    value = images.amax(1)
    chroma = value - images.amin(1)
    positive_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(
        value == red,
        (green - blue) / positive_chroma,
        torch.where(value == green, (blue - red) / positive_chroma + 2, (red - green) / positive_chroma + 4),
    )
    hue = torch.where(chroma > 0, torch.remainder(sector / 6, 1.0), torch.zeros_like(sector))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), torch.zeros_like(value))
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV ``(B, 3, H, W)`` (hue in turns) -> RGB: channel n of (red 5, green 3, blue 1)
    is ``v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``."""
    hue, saturation, value = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    offsets = torch.arange(5.0, 0.0, -2.0, dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)  # made there: no copy
    k = torch.remainder(offsets + 6 * hue, 6.0)
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0.0, 1.0)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by its ``shift`` (B,) in turns."""
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0:1] + _per_image(shift), 1.0)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


def jitter_colours(images: torch.Tensor, jitter: torch.Tensor, shifts_hue: bool = True) -> torch.Tensor:
    """Brightness, contrast, saturation, then hue of each image with its own factors.

    Args:
        images: float ``(B, 3, H, W)`` in [0, 1].
        jitter: ``(B, 4)``: brightness, contrast and saturation factors, hue shift in turns.
            Factors of 1 and a shift of 0 leave an image exactly as it is.
        shifts_hue: False when every shift is 0 (skips the hue computation).

    Returns:
        float ``(B, 3, H, W)`` in [0, 1]. Brightness scales the image; contrast blends
        it with the mean of its luma; saturation with its luma; hue rotates it in HSV.
    """
    jitter = jitter.to(device=images.device, dtype=images.dtype)
    brightness, contrast, saturation, hue = jitter.unbind(1)
    images = (images * _per_image(brightness)).clamp_(0.0, 1.0)
    images = _blend(images, grey(images).mean(dim=(1, 2, 3), keepdim=True), contrast)
    images = _blend(images, grey(images), saturation)
    if shifts_hue:
        images = torch.where(_per_image(hue != 0), shift_hue(images, hue), images)
    return images


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its device: one resampling for the geometry, then colour jitter.

    Args:
        images: uint8 RGB ``(B, 3, S, S)``.
        masks: ``(B, 1, S, S)`` (uint8 in {0, 1} stays so).
        params: the batch's choices (moved to the images' device here when needed).

    Returns:
        images float ``(B, 3, S, S)`` in [0, 1] and masks of the given dtype, each image
        and its mask moved together.
    """
    if len(params.geometry) != len(images) or len(masks) != len(images):
        raise ValueError(
            f"augment_batch got {len(images)} images, {len(masks)} masks and {len(params.geometry)} parameter sets"
        )
    images, masks = warp(images, masks, params.geometry)
    return jitter_colours(images, params.jitter, params.shifts_hue), masks
