"""Wavelet-enhanced Cross-Modal Attention (WCMA, spec Eq. 5-7), one module per tapped layer.

    LL, LH, HL, HH = Haar(F)            F: the layer's (projected) patch-feature grid
    H   = LH + HL + HH,   U = LL + H
    a   = sigmoid(W_2 ReLU(W_1 GAP(U)) + PWConv(U))     global + local weights
    F_w = LL + a * H                                     frequency-enhanced tokens
    T'  = T + MHA(query T, key F_w, value F_w)           for T in {T_n, T_a}
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...maps import tokens_to_grid
from .haar import haar_dwt2d


class FrequencyWeighting(nn.Module):
    """Reweights the high-frequency band by global (channel) and local (pointwise) weights.

    Args:
        channels: d_t.
        reduction: bottleneck ratio of the global branch (hidden width channels // reduction,
            at least 1).
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.global_branch = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.local_branch = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, grid: Tensor) -> Tensor:
        """grid: (B, C, h, w) -> F_w (B, C, ceil(h/2), ceil(w/2)) = LL + a * H."""
        bands = haar_dwt2d(grid)
        high = bands.high()
        combined = bands.ll + high
        global_weight = self.global_branch(combined.mean(dim=(2, 3)))[:, :, None, None]
        weight = torch.sigmoid(global_weight + self.local_branch(combined))
        return bands.ll + weight * high


class WaveletCrossAttention(nn.Module):
    """Refines the text features of one layer with that layer's frequency-enhanced patches.

    Args:
        dim: d_t (text and projected patch width).
        heads: attention heads (must divide ``dim``).
        reduction: see :class:`FrequencyWeighting`.
    """

    def __init__(self, dim: int, heads: int = 8, reduction: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"wcma_heads={heads} must divide the text width {dim}")
        self.frequency = FrequencyWeighting(dim, reduction)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, text: Tensor, patches: Tensor) -> Tensor:
        """Refine ``text`` with the patches of one layer.

        Args:
            text: (B, P, d_t) text features (P prompts, here [T_n, T_a]) as queries.
            patches: (B, L, d_t) patch features in raster order, L a square.

        Returns:
            (B, P, d_t) refined features T' = T + Attn(T, F_w, F_w).
        """
        enhanced = self.frequency(tokens_to_grid(patches)).flatten(2).transpose(1, 2)  # (B, L', d_t)
        attended, _ = self.attention(text, enhanced, enhanced, need_weights=False)
        return text + attended
