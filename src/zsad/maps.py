"""Operations on anomaly maps shared by every method."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import float32_region

# The side, in pixels, at which the papers run (ViT-L-14-336 at 518 px, a 37 x 37 patch
# grid); pixel settings such as smoothing widths are given at this size.
REFERENCE_SIZE = 518


def upsample(maps: torch.Tensor, size: int | tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) maps to size. A size read from a tensor's shape
    while tracing (ONNX export) is a 0-d tensor: it counts as an int."""
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)


def gaussian_blur_window(maps: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Gaussian blur of (B, H, W) maps with a ``kernel_size`` x ``kernel_size`` window
    (odd), standard deviation ``sigma`` in map cells, the weights normalised over the
    window and the borders reflected (the edge cell not repeated): kornia's
    ``gaussian_blur2d`` as MoECLIP's released code applies it to the patch grid. Runs as
    two 1-D passes in float32; returns float32 (B, H, W). Needs H, W > kernel_size // 2."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError(f"need an odd kernel_size >= 1 and sigma > 0, got {kernel_size} and {sigma}")
    half = kernel_size // 2
    if min(maps.shape[-2:]) <= half:
        raise ValueError(f"a {tuple(maps.shape[-2:])} map is too small for a {kernel_size}-wide reflected window")
    with float32_region(maps.device):
        offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=maps.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        x = F.pad(maps.float().unsqueeze(1), (half, half, half, half), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, -1, 1))
        return F.conv2d(x, kernel.view(1, 1, 1, -1)).squeeze(1)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B, H, W) maps with standard deviation sigma (pixels).

    The kernel spans +-4 sigma, borders are reflected, and the blur runs as two 1-D
    passes (the same result as a 2-D Gaussian kernel at a fraction of the cost): two
    convolutions on the CPU, and on other devices two matmuls with the (H, H) and (W, W)
    blur matrices that hold the reflection (:func:`gaussian_blur_matrix`; single-channel
    convolutions are slow on GPUs). sigma <= 0 returns the input. Runs in float32 (also
    under autocast) and returns float32.
    """
    if sigma <= 0:
        return maps
    half = math.ceil(4 * sigma)
    with float32_region(maps.device):
        if maps.device.type != "cpu":
            rows = gaussian_blur_matrix(maps.shape[-2], sigma, maps.device)
            columns = gaussian_blur_matrix(maps.shape[-1], sigma, maps.device)
            return rows @ maps.float() @ columns.T
        kernel = _gaussian_kernel(sigma, half, maps.device)
        x = F.pad(maps.float().unsqueeze(1), (half, half, half, half), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, -1, 1))
        return F.conv2d(x, kernel.view(1, 1, 1, -1)).squeeze(1)


def smooth_at_reference(maps: Tensor, sigma_at_reference: float) -> Tensor:
    """Gaussian smoothing of (B, S, S) maps whose width ``sigma_at_reference`` is given in
    pixels at REFERENCE_SIZE and scaled to the maps' side S."""
    return gaussian_smooth(maps, sigma_at_reference * maps.shape[-1] / REFERENCE_SIZE)


def fuse_scores(anomaly_map: Tensor, global_probability: Tensor) -> Tensor:
    """Image score: the mean of the map's maximum and a global anomaly probability.
    anomaly_map (B, H, W), global_probability (B,) -> (B,)."""
    return 0.5 * (anomaly_map.flatten(1).amax(dim=1) + global_probability)


def _gaussian_kernel(sigma: float, half: int, device: torch.device) -> torch.Tensor:
    """(2 half + 1,) normalised Gaussian weights, float32."""
    offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur_matrix(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) float32 matrix M with ``M @ x`` = the 1-D Gaussian blur of x (size,) with
    the kernel of :func:`gaussian_smooth` and reflected borders (``F.pad(mode="reflect")``,
    the edge sample not repeated): output i gathers ``kernel[o]`` from input
    ``reflect(i + o)``. Needs ``size > ceil(4 sigma)``, like the reflection padding."""
    half = math.ceil(4 * sigma)
    if size <= half:
        raise ValueError(f"a map side of {size} px is too small for reflection padding of {half} px (sigma {sigma})")
    kernel = _gaussian_kernel(sigma, half, device)
    outputs = torch.arange(size, device=device).unsqueeze(1)  # (size, 1)
    sources = outputs + torch.arange(-half, half + 1, device=device)  # (size, 2 half + 1)
    sources = sources.abs()  # reflect below 0
    sources = torch.where(sources > size - 1, 2 * (size - 1) - sources, sources)  # and above size - 1
    matrix = torch.zeros(size, size, dtype=torch.float32, device=device)
    return matrix.scatter_add_(1, sources, kernel.expand(size, -1).contiguous())


def patch_grid_size(num_tokens: int) -> int:
    """Side of the square patch grid holding ``num_tokens`` tokens; error if not square."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} patch tokens do not form a square grid (CLS must be excluded)")
    return side


def tokens_to_grid(tokens: Tensor) -> Tensor:
    """(B, L, C) raster-order tokens -> (B, C, h, h) feature map."""
    batch, length, channels = tokens.shape
    side = patch_grid_size(length)
    return tokens.transpose(1, 2).reshape(batch, channels, side, side)


def cosine_scores(features: Tensor, text: Tensor) -> Tensor:
    """Cosine similarity of features with the [T_N, T_A] text features.

    Args:
        features: (B, ..., d_t).
        text: (2, d_t) shared, or (B, 2, d_t) per image (normal first, anomalous second).

    Returns:
        (B, ..., 2) float32: norms and products run in float32, also under autocast.
    """
    if text.dim() not in (2, 3) or (text.dim() == 3 and text.shape[0] != features.shape[0]):
        raise ValueError(f"text must be (2, d_t) or (B, 2, d_t), got {tuple(text.shape)}")
    with float32_region(features.device):
        features = F.normalize(features.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        if text.dim() == 2:
            return features @ text.T
        flat = features.reshape(features.shape[0], -1, features.shape[-1])  # (B, M, d_t)
        return (flat @ text.transpose(1, 2)).reshape(*features.shape[:-1], text.shape[1])
