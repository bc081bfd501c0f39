"""Image/mask transforms: the resize to ``S x S`` and OpenAI CLIP's normalisation.

Both transforms take a PIL image and an optional ``(H, W)`` bool mask (as returned by
``zsad.imageio``), resize the image bicubic (antialiased) to ``S x S`` without crop and
the mask nearest (``NEAREST_EXACT``: pixel-centre aligned like the image), and return
``(image, mask)`` tensors:

* :class:`EvalTransform`: image float32 ``(3, S, S)`` CLIP-normalised, mask float32
  ``(1, S, S)`` in {0, 1} (all zeros without a mask);
* :class:`ResizeTransform`: image uint8 ``(3, S, S)``, mask uint8 ``(1, S, S)`` in {0, 1},
  what the training workers deliver: the training device augments the batch
  (``zsad.data.augment``) and normalises it (:func:`unit_range`, :func:`clip_normalize`).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
UINT8_TO_UNIT = 1.0 / 255  # uint8 value -> [0, 1]

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "UINT8_TO_UNIT",
    "EvalTransform",
    "ResizeTransform",
    "clip_normalize",
    "normalize_image",
    "resize_image",
    "resize_mask",
    "unit_range",
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


def unit_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32 scaled to [0, 1] (any device): ``value *
    UINT8_TO_UNIT``, the arithmetic of torchvision's ``to_dtype(..., scale=True)``."""
    if image.dtype != torch.uint8:
        raise ValueError(f"unit_range scales uint8 images, got {image.dtype}")
    return image.to(torch.float32).mul_(UINT8_TO_UNIT)


def clip_normalize(image: torch.Tensor) -> torch.Tensor:
    """float ``(..., 3, H, W)`` in [0, 1] -> normalised with CLIP's mean/std (any device)."""
    return F.normalize(image, list(CLIP_MEAN), list(CLIP_STD))


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float32 scaled to [0, 1] and CLIP-normalised."""
    return clip_normalize(unit_range(image))


class ResizeTransform:
    """Resize image (bicubic) and mask (nearest) to ``image_size x image_size``, kept uint8."""

    def __init__(self, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns image uint8 ``(3, S, S)`` and mask uint8 ``(1, S, S)`` in {0, 1}."""
        return resize_image(image, self.image_size), resize_mask(mask, self.image_size)


class EvalTransform(ResizeTransform):
    """Resize image (bicubic) and mask (nearest) to ``image_size x image_size``; normalise the image."""

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns image ``(3, S, S)`` float32 normalised and mask ``(1, S, S)`` float32 in {0, 1}."""
        resized, resized_mask = super().__call__(image, mask)
        return normalize_image(resized), resized_mask.float()
