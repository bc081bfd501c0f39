"""MoECLIP heads: patch average aggregation, layer projections, depth-wise adapter, maps.

Patch tokens arrive in raster order (row-major over the sqrt(L) x sqrt(L)
grid) with the CLS token already removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...maps import cosine_scores, patch_grid_size, tokens_to_grid
from ...precision import float32_region


def _box_sums_along(x: Tensor, dim: int, scales: Sequence[int]) -> dict[int, Tensor]:
    """Zero-padded moving sums (not means) along ``dim``, one per odd window in ``scales``.

    The window of s is the window of s - 2 plus its two new ends, so every scale up to the
    largest costs two additions of shifted slices of the zero-padded input (cheaper than a
    cumulative sum along a middle axis, which the CPU does not vectorise). Returns
    {s: tensor shaped like x}."""
    reach = max(scales) // 2
    length = x.shape[dim]
    padded = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [reach, reach])
    sums, running = {}, x
    for half in range(1, reach + 1):
        running = running + padded.narrow(dim, reach - half, length) + padded.narrow(dim, reach + half, length)
        if 2 * half + 1 in scales:
            sums[2 * half + 1] = running
    return sums


def patch_average(tokens: Tensor, scales: Sequence[int] = (1, 3, 5)) -> list[Tensor]:
    """Patch Average Aggregation (Eq. 10): s x s mean of neighbouring patches, per scale.

    Stride 1, zero padding s // 2, always divided by s^2 (border windows count
    the padded zeros), i.e. ``avg_pool2d(count_include_pad=True)``. Computed as 1-D box
    sums on the (B, h, w, d) token grid, rows then columns, the row sums of all scales
    shared (channels stay contiguous; on an H100 a channels-last ``avg_pool2d`` took
    1.1 ms per call on a (32, 1024, 37, 37) float32 grid).

    Args:
        tokens: (B, L, d) patch tokens, L a perfect square.
        scales: odd positive window sizes.

    Returns:
        One (B, L, d) tensor per scale, in the order of ``scales``.
    """
    for scale in scales:
        if scale < 1 or scale % 2 == 0:
            raise ValueError(f"PAA scales must be odd positive integers, got {scale}")
    batch, length, width = tokens.shape
    side = patch_grid_size(length)
    grid = tokens.reshape(batch, side, side, width)
    windows = sorted({scale for scale in scales if scale > 1})
    row_sums = _box_sums_along(grid, 1, windows) if windows else {}
    averaged = []
    for scale in scales:
        if scale == 1:
            averaged.append(tokens)
            continue
        window_sums = _box_sums_along(row_sums[scale], 2, (scale,))[scale]
        averaged.append((window_sums / (scale * scale)).reshape(batch, length, width))
    return averaged


class LayerProjections(nn.Module):
    """One bias-free ``Linear(d, d_t)`` per tapped layer (Eq. 11), Xavier-uniform init, in
    ``projections`` (kept in this module so that checkpoint keys stay as they are).

    Args:
        d: visual token width.
        text_dim: d_t, width of the text features.
        num_layers: number of tapped layers.
    """

    def __init__(self, d: int, text_dim: int, num_layers: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(d, text_dim, bias=False) for _ in range(num_layers))
        for projection in self.projections:
            nn.init.xavier_uniform_(projection.weight)


def project_patch_averages(
    tokens: Tensor, scales: Sequence[int], layer_norm: nn.LayerNorm, projection: nn.Linear
) -> list[Tensor]:
    """``projection(layer_norm(patch_average(tokens, s)))`` for every scale, with ONE matmul.

    LayerNorm is an affine map of the centred, rescaled token, and averaging (A), centring
    and the bias-free projection are linear. Centring commutes with A (mu(A x) = A mu(x)),
    so with c = x - mu(x) and W' = W diag(gamma):
    ``W LN(A x) = A (W' c) / sigma(A x) + W beta``, ``sigma(A x)^2 = mean(A c ^ 2) + eps``.
    The d -> d_t projection runs once per layer, on the CENTRED tokens, and the averaging
    runs on its output. Centring first matters under bf16 autocast: projecting raw tokens
    and subtracting mu W' 1 afterwards cancels most of the value when a token's mean is
    large next to its spread. Only the matmul may run in bf16; centring, averaging and
    the normalisation run in float32.

    tokens: (B, L, d) patch tokens (L square); returns one float32 (B, L, d_t) tensor per scale.
    """
    with float32_region(tokens.device):
        tokens = tokens.float()
        centred = tokens - tokens.mean(dim=-1, keepdim=True)
        weight = projection.weight.float() * layer_norm.weight.float()  # W', (d_t, d)
        projected_bias = projection.weight.float() @ layer_norm.bias.float()  # W beta, (d_t,)
    projected = (centred @ weight.t()).float()  # (B, L, d_t): the one matmul (autocast decides)
    results = []
    with float32_region(tokens.device):
        for averaged, averaged_projection in zip(patch_average(centred, scales), patch_average(projected, scales)):
            mean_square = torch.linalg.vector_norm(averaged, dim=-1, keepdim=True).square() / averaged.shape[-1]
            std = (mean_square + layer_norm.eps).sqrt()
            results.append(torch.addcdiv(projected_bias, averaged_projection, std))
    return results


class DepthwiseAdapter(nn.Module):
    """Image-level adapter (Eq. 13): LN -> depth-wise conv -> GELU -> point-wise conv -> mean.

    The convolutions run over the token sequence in raster order.

    Args:
        d: token width.
        text_dim: d_t, output width.
        kernel_size: depth-wise kernel (odd; "same" padding).
    """

    def __init__(self, d: int, text_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        self.norm = nn.LayerNorm(d)
        self.depthwise = nn.Conv1d(d, d, kernel_size, padding=kernel_size // 2, groups=d, bias=False)
        self.activation = nn.GELU()
        self.pointwise = nn.Conv1d(d, text_dim, kernel_size=1)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, L, d) -> V_image (B, d_t).

        Computed on the (B, L, d) layout: the depth-wise convolution as k shifted
        multiply-adds over the zero-padded sequence (float32, like the LayerNorm output),
        and the mean over the sequence taken BEFORE the point-wise convolution, which is
        affine, so ``mean(W g + b) = W mean(g) + b``."""
        normalised = self.norm(tokens)  # (B, L, d)
        length = normalised.shape[1]
        kernel = self.depthwise.weight[:, 0, :]  # (d, k)
        half = kernel.shape[1] // 2
        padded = F.pad(normalised, (0, 0, half, half))  # zeros before and after the sequence
        mixed = padded[:, :length] * kernel[:, 0]
        for offset in range(1, kernel.shape[1]):
            mixed = torch.addcmul(mixed, padded[:, offset : offset + length], kernel[:, offset])
        pooled = self.activation(mixed).mean(dim=1)  # (B, d)
        return self.pointwise(pooled.unsqueeze(-1)).squeeze(-1)


def anomaly_logits(features: Tensor, text: Tensor, logit_scale: float = 100.0) -> Tensor:
    """Patch-level logits ``logit_scale * cos(V, [T_N, T_A])`` on the patch grid (Eq. 12).

    Args:
        features: (B, L, d_t) projected patch features, L a perfect square.
        text: (2, d_t) or (B, 2, d_t).
        logit_scale: CLIP's logit scale (100).

    Returns:
        (B, 2, h, h) logits, channel 0 normal, channel 1 anomalous.
    """
    return tokens_to_grid(logit_scale * cosine_scores(features, text))


def anomalous_probabilities(logit_gaps: Tensor, out_size: int | tuple[int, int]) -> Tensor:
    """Anomalous-class probability of M maps from their logit gaps at the patch grid.

    For one map with (normal, anomalous) logits l = (l_N, l_A) on the grid, the spec's map
    is ``softmax(upsample(l))[anomalous]`` (upsample first, then softmax). With two
    classes that is ``sigmoid(upsample(l)_A - upsample(l)_N)``, and bilinear upsampling is
    linear, so it equals ``sigmoid(upsample(l_A - l_N))``: exact, with ONE upsampled
    channel per map and all M maps in one call.

    Args:
        logit_gaps: (B, M, h, w) anomalous minus normal logits.
        out_size: side or (H, W) of the output.

    Returns:
        (B, M, H, W) float32 probabilities (computed in float32, also under autocast).
    """
    with float32_region(logit_gaps.device):
        upsampled = F.interpolate(logit_gaps.float(), size=out_size, mode="bilinear", align_corners=False)
        return upsampled.sigmoid()
