"""The map kit every method uses: smoothing given at the reference size, score fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zsad.maps import (
    REFERENCE_SIZE,
    fuse_scores,
    gaussian_blur_window,
    gaussian_smooth,
    smooth_at_reference,
)


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


@pytest.mark.parametrize("window, sigma", [(7, 1.0), (9, 1.5), (3, 0.5)])
def test_window_blur_matches_scipys_truncated_gaussian(window, sigma):
    """A window x window Gaussian, weights normalised over the window, reflected borders
    (kornia's gaussian_blur2d): scipy's gaussian_filter truncated at window // 2 cells with
    its `mirror` border is the same filter."""
    from scipy.ndimage import gaussian_filter

    maps = torch.randn(2, 11, 13, generator=torch.Generator().manual_seed(window))
    expected = np.stack([gaussian_filter(m.numpy(), sigma, mode="mirror", truncate=(window // 2) / sigma) for m in maps])
    assert np.allclose(gaussian_blur_window(maps, window, sigma).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur_window(maps, 4, 1.0)
    with pytest.raises(ValueError, match="too small"):
        gaussian_blur_window(maps[:, :3, :3], 9, 1.5)
