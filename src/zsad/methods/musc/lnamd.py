"""LNAMD: local neighbourhood aggregation of patch tokens at several degrees (MuSc, spec §2).

Per image: one standardisation over all C x h x w values, an r x r box average with
zero padding counted in the divisor (so borders shrink towards the image mean), then an
L2 normalisation of every location's C-vector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import InvalidInputError

STANDARDISE_EPS = 1e-5  # the reference's layer-norm epsilon


def standardise(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L, C) patch tokens -> (B, L, C) float32 with one mean and one (biased) variance
    per image over all L * C values (a layer norm over (C, h, w) without affine terms)."""
    tokens = tokens.float()
    mean = tokens.mean(dim=(1, 2), keepdim=True)
    var = tokens.var(dim=(1, 2), unbiased=False, keepdim=True)
    return (tokens - mean) / torch.sqrt(var + STANDARDISE_EPS)


def box_average(tokens: torch.Tensor, grid: tuple[int, int], degree: int) -> torch.Tensor:
    """(B, L, C) tokens on an h x w raster grid -> (B, L, C): the mean over the r x r
    neighbourhood, stride 1, zero padding (r - 1) / 2, divisor always r^2 (padding counted).

    Computed as two 1-D box sums (rows, then columns) of the zero-padded grid; equals
    ``avg_pool2d(..., count_include_pad=True)``. r = 1 returns the input."""
    if degree < 1 or degree % 2 == 0:
        raise InvalidInputError(f"aggregation degree must be odd and >= 1, got {degree}")
    if degree == 1:
        return tokens
    h, w = grid
    batch, length, channels = tokens.shape
    half = degree // 2
    padded = F.pad(tokens.reshape(batch, h, w, channels), (0, 0, half, half, half, half))  # (B, h+2p, w+2p, C)
    rows = sum(padded[:, :, shift : shift + w] for shift in range(degree))  # (B, h+2p, w, C)
    boxes = sum(rows[:, shift : shift + h] for shift in range(degree))  # (B, h, w, C)
    return (boxes / degree**2).reshape(batch, length, channels)


def aggregate(standardised: torch.Tensor, grid: tuple[int, int], degree: int) -> torch.Tensor:
    """(B, L, C) standardised tokens -> (B, L, C) unit vectors of degree ``degree``."""
    return F.normalize(box_average(standardised, grid, degree), dim=-1)
