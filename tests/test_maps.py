"""The map kit every method uses: smoothing given at the reference size, score fusion."""
from __future__ import annotations

import torch

from zsad.maps import REFERENCE_SIZE, fuse_scores, gaussian_smooth, smooth_at_reference


def test_smoothing_width_scales_with_the_map_side():
    torch.manual_seed(0)
    maps = torch.rand(2, 74, 74)
    # 4 px at the reference size is 4 * 74 / 518 px at 74 px.
    assert torch.equal(smooth_at_reference(maps, 4.0), gaussian_smooth(maps, 4.0 * 74 / REFERENCE_SIZE))
    full = torch.rand(1, REFERENCE_SIZE, REFERENCE_SIZE)
    assert torch.equal(smooth_at_reference(full, 2.0), gaussian_smooth(full, 2.0))


def test_fused_score_is_the_mean_of_map_maximum_and_global_probability():
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 2] = 0.8
    maps[1, 3, 3] = 0.2
    fused = fuse_scores(maps, torch.tensor([0.4, 1.0]))
    assert torch.allclose(fused, torch.tensor([0.6, 0.6]))
