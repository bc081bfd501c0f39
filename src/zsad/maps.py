"""Operations on anomaly maps shared by every method."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) maps to size (align_corners False)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B, H, W) maps with standard deviation sigma (pixels).

    The kernel spans +-4 sigma, borders are reflected, and the blur runs as two 1-D
    passes (the same result as a 2-D Gaussian kernel at a fraction of the cost).
    sigma <= 0 returns the input.
    """
    if sigma <= 0:
        return maps
    half = math.ceil(4 * sigma)
    offsets = torch.arange(-half, half + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps.unsqueeze(1), (half, half, half, half), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return F.conv2d(x, kernel.view(1, 1, 1, -1)).squeeze(1)


def cosine_logits(features: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled cosine similarity of features with the [normal, abnormal] text pair.

    features: (B, L, d_t); text: (B, 2, d_t) or (2, d_t). Returns (B, L, 2).
    """
    features = F.normalize(features, dim=-1)
    text = F.normalize(text, dim=-1)
    if text.dim() == 2:
        return scale * features @ text.t()
    return scale * torch.einsum("bld,bkd->blk", features, text)


def tokens_to_grid(values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, L, C) token values -> (B, C, h, w) on the patch grid (raster order)."""
    batch, tokens, channels = values.shape
    if tokens != grid[0] * grid[1]:
        raise ValueError(f"{tokens} tokens do not fill a {grid[0]} x {grid[1]} grid")
    return values.transpose(1, 2).reshape(batch, channels, grid[0], grid[1])
