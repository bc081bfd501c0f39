"""Image/mask transforms: a deterministic evaluation resize and a joint training augmentation.

Both take a PIL image and an optional ``(H, W)`` bool mask (as returned by
``zsad.imageio``) and return ``(image, mask)`` tensors:

* image: float32 ``(3, S, S)``, bicubic (antialiased) resize to ``S x S`` without crop,
  normalised with OpenAI CLIP's mean/std;
* mask: float32 ``(1, S, S)`` in {0, 1}, nearest resize (``NEAREST_EXACT``: pixel-centre
  aligned like the bicubic image resize); all zeros when there is no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "AugmentParams",
    "EvalTransform",
    "TrainAugment",
    "normalize_image",
    "resize_image",
    "resize_mask",
]


def resize_image(image: Image.Image, image_size: int) -> torch.Tensor:
    """PIL RGB image -> uint8 ``(3, S, S)`` tensor, bicubic with antialiasing, no crop."""
    tensor = F.pil_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)
    return F.resize(tensor, [image_size, image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)


def resize_mask(mask: np.ndarray | None, image_size: int) -> torch.Tensor:
    """``(H, W)`` bool mask (or None) -> uint8 ``(1, S, S)`` in {0, 1}, nearest resize."""
    if mask is None:
        return torch.zeros(1, image_size, image_size, dtype=torch.uint8)
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None]
    return F.resize(tensor, [image_size, image_size], interpolation=InterpolationMode.NEAREST_EXACT)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(3, S, S)`` -> float32 ``(3, S, S)`` scaled to [0, 1] and CLIP-normalised."""
    return F.normalize(F.to_dtype(image, torch.float32, scale=True), list(CLIP_MEAN), list(CLIP_STD))


class EvalTransform:
    """Resize image (bicubic) and mask (nearest) to ``image_size x image_size``; normalise the image."""

    def __init__(self, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns image ``(3, S, S)`` float32 normalised and mask ``(1, S, S)`` float32 in {0, 1}."""
        return (
            normalize_image(resize_image(image, self.image_size)),
            resize_mask(mask, self.image_size).float(),
        )


@dataclass(frozen=True)
class AugmentParams:
    """One draw of :class:`TrainAugment`'s random choices (None / False: the op does not fire).

    Attributes:
        translate: ``(dx, dy)`` shift in pixels.
        angle: rotation in degrees (counter-clockwise).
        hflip, vflip: horizontal / vertical flip.
        jitter: ``(brightness, contrast, saturation, hue)`` factors; hue is a shift in [-0.5, 0.5].
    """

    translate: tuple[int, int] | None
    angle: float | None
    hflip: bool
    vflip: bool
    jitter: tuple[float, float, float, float] | None


class TrainAugment:
    """Joint geometric augmentation of image and mask plus colour jitter of the image.

    Each of translate, rotate, horizontal flip, vertical flip and colour jitter fires
    independently with probability ``p``. Geometric ops use the same parameters for image
    (bilinear) and mask (nearest), so the mask stays on the defect; empty borders are black
    in the image and 0 in the mask. Colour jitter changes the image only.

    Args:
        image_size: output side ``S``.
        p: probability of each op.
        translate: largest shift as a fraction of ``S`` (per axis).
        degrees: largest rotation angle.
        jitter: ``(brightness, contrast, saturation, hue)`` strengths as in torchvision's
            ColorJitter (factors drawn from ``[1 - s, 1 + s]``; hue shift from ``[-h, h]``).
        seed: seeds a private generator for reproducible draws. None draws from torch's
            global generator, which DataLoader seeds differently in every worker (use None
            inside multi-worker loaders, or every worker repeats the same draws).
    """

    def __init__(
        self,
        image_size: int,
        p: float = 0.5,
        translate: float = 0.15,
        degrees: float = 30.0,
        jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.0),
        seed: int | None = None,
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
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=self._generator).item()

    def _fires(self) -> bool:
        return torch.rand((), generator=self._generator).item() < self.p

    def sample_params(self) -> AugmentParams:
        """Draw the random choices for one sample."""
        translate = None
        if self.translate > 0 and self._fires():
            limit = self.translate * self.image_size
            translate = (round(self._uniform(-limit, limit)), round(self._uniform(-limit, limit)))
        angle = self._uniform(-self.degrees, self.degrees) if self.degrees > 0 and self._fires() else None
        hflip = self._fires()
        vflip = self._fires()
        jitter = None
        if any(self.jitter) and self._fires():
            brightness, contrast, saturation, hue = self.jitter
            jitter = (
                self._uniform(max(0.0, 1 - brightness), 1 + brightness),
                self._uniform(max(0.0, 1 - contrast), 1 + contrast),
                self._uniform(max(0.0, 1 - saturation), 1 + saturation),
                self._uniform(-hue, hue),
            )
        return AugmentParams(translate, angle, hflip, vflip, jitter)

    @staticmethod
    def apply(
        image: torch.Tensor, mask: torch.Tensor, params: AugmentParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``params`` to uint8 image ``(3, S, S)`` and uint8 mask ``(1, S, S)``; same shapes out."""
        if params.translate is not None:
            shift = dict(angle=0.0, translate=list(params.translate), scale=1.0, shear=[0.0, 0.0], fill=0)
            image = F.affine(image, interpolation=InterpolationMode.BILINEAR, **shift)
            mask = F.affine(mask, interpolation=InterpolationMode.NEAREST, **shift)
        if params.angle is not None:
            image = F.rotate(image, params.angle, interpolation=InterpolationMode.BILINEAR, fill=0)
            mask = F.rotate(mask, params.angle, interpolation=InterpolationMode.NEAREST, fill=0)
        if params.hflip:
            image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
        if params.vflip:
            image, mask = F.vertical_flip(image), F.vertical_flip(mask)
        if params.jitter is not None:
            brightness, contrast, saturation, hue = params.jitter
            image = F.adjust_brightness(image, brightness)
            image = F.adjust_contrast(image, contrast)
            image = F.adjust_saturation(image, saturation)
            if hue != 0.0:
                image = F.adjust_hue(image, hue)
        return image, mask

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns image ``(3, S, S)`` float32 normalised and mask ``(1, S, S)`` float32 in {0, 1}."""
        image_u8 = resize_image(image, self.image_size)
        mask_u8 = resize_mask(mask, self.image_size)
        image_u8, mask_u8 = self.apply(image_u8, mask_u8, self.sample_params())
        return normalize_image(image_u8), mask_u8.float()
