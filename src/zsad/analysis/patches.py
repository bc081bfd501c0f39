"""Low-level visual statistics of image patches (MoECLIP Tab. 14).

The patches are the ViT's input patches: a ``patch_size x patch_size`` tile per
patch token, in the token order (row-major over the patch grid). The statistics are
taken on the grayscale version of the model input, un-normalised back to [0, 255].
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..data.transforms import CLIP_MEAN, CLIP_STD

__all__ = ["PATCH_STATISTICS", "patch_statistics", "to_grayscale", "to_uint8_rgb"]

PATCH_STATISTICS = ("gradient", "std", "entropy")
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's "L" conversion
_GRAY_LEVELS = 256


def to_uint8_rgb(image: torch.Tensor) -> np.ndarray:
    """Model input ``(3, S, S)`` (CLIP-normalised, any device) -> uint8 ``(S, S, 3)``."""
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    pixels = image.detach().float().cpu() * std + mean
    return (pixels * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> uint8 ``(H, W)`` luma (0.299 R + 0.587 G + 0.114 B, rounded)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB array (H, W, 3), got {rgb.shape}")
    return np.clip(np.rint(rgb.astype(np.float64) @ _LUMA_WEIGHTS), 0, 255).astype(np.uint8)


def _tiles(gray: np.ndarray, patch_size: int) -> np.ndarray:
    """``(H, W)`` -> ``(L, p, p)`` non-overlapping tiles, row-major over the patch grid."""
    height, width = gray.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image {gray.shape} is not a whole number of {patch_size}-pixel patches")
    rows, cols = height // patch_size, width // patch_size
    return gray.reshape(rows, patch_size, cols, patch_size).transpose(0, 2, 1, 3).reshape(-1, patch_size, patch_size)


def _sobel_magnitude(tiles: np.ndarray) -> np.ndarray:
    """Per-tile Sobel gradient magnitude ``(L, p, p)``, each tile on its own.

    Equals ``hypot(sobel(t, axis=0), sobel(t, axis=1))`` for every tile ``t`` with
    scipy's default "reflect" border. The tiles are padded by one mirrored pixel and
    stacked into one tall image so that a single pair of Sobel calls covers all of
    them: a 3 x 3 kernel centred inside a padded tile never reaches the next tile.
    """
    count, size, _ = tiles.shape
    padded = np.pad(tiles.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="symmetric")
    stacked = padded.reshape(count * (size + 2), size + 2)
    magnitude = np.hypot(ndimage.sobel(stacked, axis=0), ndimage.sobel(stacked, axis=1))
    return magnitude.reshape(count, size + 2, size + 2)[:, 1:-1, 1:-1]


def _entropy_bits(tiles: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each tile's 256-bin gray-level histogram: ``(L, p, p)`` -> ``(L,)``."""
    count = tiles.shape[0]
    offsets = np.arange(count)[:, None] * _GRAY_LEVELS
    bins = (tiles.reshape(count, -1).astype(np.int64) + offsets).ravel()
    histogram = np.bincount(bins, minlength=count * _GRAY_LEVELS).reshape(count, _GRAY_LEVELS)
    probability = histogram / histogram.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probability > 0, -probability * np.log2(probability), 0.0)
    return terms.sum(axis=1)


def patch_statistics(gray: np.ndarray, patch_size: int) -> dict[str, np.ndarray]:
    """Edge strength, contrast and complexity of every patch of a grayscale image.

    Args:
        gray: uint8 ``(H, W)``; H and W multiples of ``patch_size``.
        patch_size: side p of a patch in pixels.

    Returns:
        ``{"gradient", "std", "entropy"}``, each float64 ``(L,)`` with
        ``L = (H / p) * (W / p)`` in token order:
        gradient: mean Sobel gradient magnitude over the patch (scipy's unnormalised
            3 x 3 kernels on 0-255 values, the patch taken on its own with mirrored borders);
        std: population standard deviation of the patch's gray values;
        entropy: Shannon entropy (bits) of its 256-bin gray-level histogram.
    """
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected a uint8 grayscale image (H, W), got {gray.dtype} {gray.shape}")
    tiles = _tiles(gray, patch_size)
    flat = tiles.reshape(tiles.shape[0], -1).astype(np.float64)
    return {
        "gradient": _sobel_magnitude(tiles).reshape(tiles.shape[0], -1).mean(axis=1),
        "std": flat.std(axis=1),
        "entropy": _entropy_bits(tiles),
    }
