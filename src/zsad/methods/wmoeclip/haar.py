"""One-level 2-D Haar wavelet transform of feature maps, as a fixed-filter strided convolution.

Each channel is filtered by the four orthonormal 2 x 2 Haar filters with stride 2
(channels folded into the batch, so the filter bank does not depend on the channel
count and ONNX export keeps a dynamic batch), so the transform runs on any device and
passes gradients. Conventions follow PyWavelets' ``dwt2(x, "haar")``:

    ll = (a + b + c + d) / 2      approximation        (pywt cA)
    lh = (a + b - c - d) / 2      horizontal detail    (pywt cH)
    hl = (a - b + c - d) / 2      vertical detail      (pywt cV)
    hh = (a - b - c + d) / 2      diagonal detail      (pywt cD)

for every 2 x 2 block [[a, b], [c, d]]. An odd height or width is first padded by
one row / column that repeats the last one (PyWavelets' ``symmetric`` mode gives
the same coefficients). The filters are orthonormal, so the transposed
convolution with the same filters is the exact inverse.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_HAAR_FILTERS = (
    ((1.0, 1.0), (1.0, 1.0)),
    ((1.0, 1.0), (-1.0, -1.0)),
    ((1.0, -1.0), (1.0, -1.0)),
    ((1.0, -1.0), (-1.0, 1.0)),
)


@dataclass
class HaarBands:
    """The four sub-bands of a (B, C, H, W) map, each (B, C, ceil(H/2), ceil(W/2))."""

    ll: Tensor
    lh: Tensor
    hl: Tensor
    hh: Tensor

    def high(self) -> Tensor:
        """The summed high-frequency component lh + hl + hh."""
        return self.lh + self.hl + self.hh


def haar_filters(device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(4, 1, 2, 2) convolution weights: output channels ll, lh, hl, hh."""
    return (torch.tensor(_HAAR_FILTERS, device=device, dtype=dtype) / 2.0).unsqueeze(1)


def pad_to_even(maps: Tensor) -> Tensor:
    """Repeat the last row / column of a (B, C, H, W) map where H / W is odd."""
    height, width = maps.shape[-2:]
    if height % 2 == 0 and width % 2 == 0:
        return maps
    return F.pad(maps, (0, width % 2, 0, height % 2), mode="replicate")


def haar_dwt2d(maps: Tensor) -> HaarBands:
    """One-level 2-D Haar transform of every channel.

    Args:
        maps: (B, C, H, W) float tensor; odd H or W is padded first (:func:`pad_to_even`).

    Returns:
        :class:`HaarBands`, each (B, C, ceil(H/2), ceil(W/2)).
    """
    if maps.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) map, got shape {tuple(maps.shape)}")
    even = pad_to_even(maps)
    single = even.flatten(0, 1).unsqueeze(1)  # (B C, 1, H, W)
    bands = F.conv2d(single, haar_filters(maps.device, maps.dtype), stride=2)  # (B C, 4, H/2, W/2)
    bands = bands.unflatten(0, (-1, maps.shape[1]))  # (B, C, 4, H/2, W/2)
    return HaarBands(*bands.unbind(dim=2))


def haar_idwt2d(bands: HaarBands) -> Tensor:
    """Inverse of :func:`haar_dwt2d`: (B, C, h, w) sub-bands -> (B, C, 2h, 2w) map.

    The result has the padded (even) size; crop it to recover an odd-sized input.
    """
    stacked = torch.stack([bands.ll, bands.lh, bands.hl, bands.hh], dim=2)  # (B, C, 4, h, w)
    weights = haar_filters(stacked.device, stacked.dtype)
    restored = F.conv_transpose2d(stacked.flatten(0, 1), weights, stride=2)  # (B C, 1, 2h, 2w)
    return restored.squeeze(1).unflatten(0, (-1, stacked.shape[1]))
