"""MuSc (spec/musc.md §10): LNAMD, the blocked mutual scoring against a float64
transcription of its definition, RsCIN's properties, set sizes, and the memory bounds."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsad.errors import InvalidInputError, SmallSetWarning
from zsad.methods.musc import mutual, set_indices, upsample_maps
from zsad.methods.musc.lnamd import aggregate, box_average, standardise
from zsad.methods.musc.mutual import interval_size, mutual_scores
from zsad.methods.musc.rscin import rescore
from zsad.methods.musc.store import TokenStore


def unit(n, length, channels, seed=0):
    return F.normalize(torch.randn(n, length, channels, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reader(features):
    return lambda start, stop: features[start:stop]


def brute_force(features: torch.Tensor, fraction: float, lower: float = 0.0) -> torch.Tensor:
    """§3 transcribed literally in float64: cdist per pair, min over n, mean of order statistics."""
    z = features.double()
    n = z.shape[0]
    k = max(1, math.floor(fraction * (n - 1)))
    lo = min(math.floor(lower * (n - 1)), k - 1)
    scores = torch.empty(n, z.shape[1], dtype=torch.float64)
    for i in range(n):
        minima = torch.stack([torch.cdist(z[i], z[j]).min(dim=1).values for j in range(n) if j != i])  # (N-1, L)
        scores[i] = minima.sort(dim=0).values[lo:k].mean(dim=0)
    return scores


def score(features, fraction=0.3, lower=0.0, block_bytes=None, table_bytes=2**30):
    n, length, _ = features.shape
    block_bytes = block_bytes or 4 * length * length
    return mutual_scores(reader(features), n, length, fraction, lower, block_bytes, table_bytes)


# ---------------------------------------------------------------- LNAMD
@pytest.mark.parametrize("degree", [1, 3, 5, 7])
def test_box_average_equals_avg_pool2d_with_padding_counted(degree):
    tokens = torch.randn(2, 6 * 5, 4)
    grid = tokens.reshape(2, 6, 5, 4).permute(0, 3, 1, 2)
    expected = F.avg_pool2d(grid, degree, stride=1, padding=degree // 2, count_include_pad=True)
    got = box_average(tokens, (6, 5), degree).reshape(2, 6, 5, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_lnamd_is_per_image_standardisation_then_box_mean_then_l2():
    tokens = torch.randn(3, 16, 8) * 5 + 2
    z = standardise(tokens)
    reference = F.layer_norm(tokens, (16, 8), eps=1e-5)  # one mean and variance over all of an image's values
    torch.testing.assert_close(z, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aggregate(z, (4, 4), 1), F.normalize(reference, dim=-1), rtol=1e-5, atol=1e-5)
    out = aggregate(z, (4, 4), 3)
    assert out.shape == (3, 16, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 16))
    with pytest.raises(ValueError, match="odd"):
        box_average(z, (4, 4), 2)


# ---------------------------------------------------------------- MSM
@pytest.mark.parametrize("n", [2, 3, 5, 7, 12])
@pytest.mark.parametrize("block_images", [1, 2, 5])
def test_blocked_distance_equals_the_dense_float64_reference(n, block_images):
    features = unit(n, 16, 8, seed=n)
    got = score(features, block_bytes=4 * 16 * 16 * block_images**2)
    torch.testing.assert_close(got.double(), brute_force(features, 0.3), rtol=0, atol=2e-3)


def test_lower_interval_bound_and_row_mode_equal_the_reference():
    features = unit(11, 9, 6, seed=3)
    expected = brute_force(features, 0.6, lower=0.2)
    symmetric = score(features, 0.6, 0.2)
    by_rows = score(features, 0.6, 0.2, table_bytes=1)  # the table never fits: query block by query block
    torch.testing.assert_close(symmetric.double(), expected, rtol=0, atol=2e-3)
    torch.testing.assert_close(by_rows, symmetric, rtol=0, atol=1e-6)


def test_order_of_the_set_permutes_the_scores_and_patch_order_inside_others_is_irrelevant():
    features = unit(9, 12, 5, seed=4)
    base = score(features)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(score(features[order]), base[order], rtol=0, atol=1e-6)
    shuffled = features.clone()
    shuffled[1:] = shuffled[1:, torch.randperm(12)]  # image 0 keeps its layout
    torch.testing.assert_close(score(shuffled)[0], base[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [5, 6, 7])
def test_an_image_with_a_duplicate_scores_zero_at_every_patch_when_k_is_one(n):
    features = unit(n, 16, 32, seed=n)
    features[1] = features[0]
    assert interval_size(n, 0.3) == 1
    scores = score(features)
    assert scores[:2].max() <= 1e-3  # fp32 sqrt(2 - 2 dot) of identical vectors: ~1e-4, not 0
    assert scores[2:].min() > 0.1


def test_identical_images_score_zero_and_rescore_to_zeros():
    features = unit(1, 16, 8).expand(6, 16, 8).contiguous()
    scores = score(features)
    assert scores.max() <= 1e-3
    assert torch.equal(rescore(torch.zeros(6), torch.randn(6, 4), (1, 2, 3)), torch.zeros(6))


def test_interval_size_rule():
    assert [interval_size(n, 0.3) for n in (2, 3, 4, 5, 11, 200)] == [1, 1, 1, 1, 3, 59]
    with pytest.raises(ValueError, match="at least two"):
        interval_size(1, 0.3)


def test_a_planted_odd_patch_gets_the_top_score_at_its_cell():
    features = unit(8, 36, 16, seed=5)
    normal = features[0, 0].clone()
    features[:, :] = F.normalize(normal + 0.05 * torch.randn(8, 36, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    features[3, 14] = F.normalize(torch.randn(16), dim=-1)
    scores = score(features)
    assert int(scores.amax(dim=1).argmax()) == 3 and int(scores[3].argmax()) == 14
    maps = upsample_maps(scores.reshape(8, 6, 6), 60)
    row, col = divmod(int(maps[3].argmax()), 60)
    assert abs(row / 59 * 5 - 14 // 6) <= 1 and abs(col / 59 * 5 - 14 % 6) <= 1
    assert maps.amax(dim=(1, 2)).le(scores.amax(dim=1) + 1e-6).all()  # upsampled max <= grid max
    torch.testing.assert_close(maps[:, 0, 0], scores[:, 0])  # corners are the grid corners


def test_raising_one_pair_distance_never_lowers_a_score():
    table = torch.rand(7, 7, 5)
    table.diagonal(dim1=0, dim2=1).fill_(float("inf"))
    base = mutual.interval_average(table, 0.5)
    for j in (1, 4, 6):
        raised = table.clone()
        raised[0, j, 2] += 0.7
        assert (mutual.interval_average(raised, 0.5) >= base).all()


def test_a_bounded_block_never_allocates_beyond_the_setting(monkeypatch):
    sizes: list[int] = []
    original = torch.matmul

    def recording(a, b):
        out = original(a, b)
        sizes.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(mutual.torch, "matmul", recording)
    length, budget = 25, 4 * 25 * 25 * 9  # three images per side
    largest = {}
    for n in (2, 5, 12, 30):
        sizes.clear()
        mutual_scores(reader(unit(n, length, 4, seed=n)), n, length, 0.3, 0.0, budget, 2**30)
        largest[n] = max(sizes)
        assert largest[n] <= budget
    assert largest[30] == largest[12]  # grows no further with N
    with pytest.raises(ValueError, match="below one image pair"):
        mutual_scores(reader(unit(3, length, 4)), 3, length, 0.3, 0.0, 4 * length * length - 1)


# ---------------------------------------------------------------- RsCIN
def test_rscin_window_one_is_min_max_and_rows_sum_to_one():
    a = torch.tensor([3.0, 1.0, 2.0, 5.0])
    g = torch.randn(4, 6).abs()
    torch.testing.assert_close(rescore(a, g, (1,)), (a - 1) / 4)
    out = rescore(a, g, (1, 2, 3))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(rescore(7 * a + 3, g, (1, 2, 3)), out)  # positive affine invariance
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(rescore(a[order], g[order], (1, 2, 3)), out[order])
    # k >= N: every image gets the similarity-weighted mean of all normalised scores
    unitg = F.normalize(g, dim=-1)
    weights = unitg @ unitg.T
    expected = (weights / weights.sum(1, keepdim=True)) @ ((a - 1) / 4)
    torch.testing.assert_close(rescore(a, g, (9,)), expected)


# ---------------------------------------------------------------- sets and storage
def test_set_of_one_is_refused_and_small_sets_warn_without_nan():
    from zsad.methods.build import build_detector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = build_detector("musc", backbone="zsad-tiny", weights="random", image_size=32)
    images = torch.randn(3, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="at least 2 images"):
        detector(images[:1], None)
    with pytest.warns(SmallSetWarning):
        out = detector(images, None)
    assert torch.isfinite(out.anomaly_map).all() and torch.isfinite(out.pred_score).all()


def test_set_indices_are_label_free_and_cover_every_image_once():
    parts = set_indices(23, 10)
    assert len(parts) == 3 and sorted(i for part in parts for i in part) == list(range(23))
    assert parts == set_indices(23, 10)
    assert set_indices(5, None) == [list(range(5))] == set_indices(5, 9)


def test_token_store_spills_to_a_memory_map_with_the_same_values(tmp_path):
    batches = [{6: torch.randn(2, 4, 3), 12: torch.randn(2, 4, 3)} for _ in range(3)]
    with TokenStore((6, 12), memory_bytes=10**6) as kept, TokenStore((6, 12), memory_bytes=100, spill_dir=tmp_path) as spilled:
        for batch in batches:
            kept.append(batch)
            spilled.append(batch)
        assert spilled.spilled and not kept.spilled
        assert isinstance(spilled.tokens(6), np.memmap)
        for tap in (6, 12):
            np.testing.assert_array_equal(np.asarray(spilled.tokens(tap)), kept.tokens(tap))
    assert not list(tmp_path.iterdir())  # the spill files are removed
