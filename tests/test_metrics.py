"""Tests for zsad.metrics against scikit-learn and a slow AUPRO reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from zsad.metrics import aupro, image_metrics, pixel_metrics

# --------------------------------------------------------------------------- references


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def reference_aupro(maps: list[np.ndarray], masks: list[np.ndarray], fpr_limit: float) -> float:
    """Slow, literal AUPRO: one curve point per distinct score of any pixel."""
    regions = []  # (image index, boolean mask of one 8-connected region)
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask != 0, structure=np.ones((3, 3)))
        regions += [(index, labelled == region) for region in range(1, count + 1)]
    normal_scores = np.concatenate([m[k == 0] for m, k in zip(maps, masks)]).astype(np.float64)
    thresholds = np.unique(np.concatenate([m.ravel() for m in maps]).astype(np.float64))[::-1]
    points = [(0.0, 0.0)]
    for threshold in thresholds:
        fpr = float(np.mean(normal_scores >= threshold))
        pro = float(np.mean([np.mean(maps[i][region] >= threshold) for i, region in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_at_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_at_limit) / 2
    return area / fpr_limit


# --------------------------------------------------------------------------- data


def random_images(
    rng: np.random.Generator,
    shapes: list[tuple[int, int]],
    decimals: int | None = 1,
    empty_every: int = 3,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Maps correlated with sparse masks of many small regions; every `empty_every`-th mask empty.

    Scores rounded to `decimals` give many ties, within and across classes.
    """
    maps, masks = [], []
    for index, shape in enumerate(shapes):
        mask = rng.random(shape) < 0.12
        if index % empty_every == 0:
            mask[:] = False
        scores = rng.random(shape) + 0.4 * mask
        if decimals is not None:
            scores = np.round(scores, decimals)
        maps.append(scores)
        masks.append(mask)
    return maps, masks


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays])


# --------------------------------------------------------------------------- image metrics


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [1, None])
def test_image_metrics_match_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.4
    scores = rng.random(60) + 0.3 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)
    result = image_metrics(scores, labels.astype(int))
    assert result["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert result["image_f1max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)
    assert all(type(value) is float for value in result.values())


def test_image_metrics_all_tied_scores():
    labels = np.array([0, 1, 0, 1, 1])
    result = image_metrics(np.full(5, 0.7), labels)
    assert result == {"image_auroc": 0.5, "image_ap": 0.6, "image_f1max": pytest.approx(2 * 0.6 / 1.6)}


@pytest.mark.parametrize("labels", [np.zeros(5, dtype=int), np.ones(5, dtype=bool)])
def test_image_metrics_single_label_is_none(labels):
    result = image_metrics(np.linspace(0, 1, 5), labels)
    assert result == {"image_auroc": None, "image_ap": None, "image_f1max": None}


def test_image_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        image_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError):
        image_metrics(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError):
        image_metrics(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))


# --------------------------------------------------------------------------- pixel metrics


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("decimals", [1, None])
def test_pixel_metrics_match_sklearn(dtype, decimals):
    rng = np.random.default_rng(7)
    maps, masks = random_images(rng, [(12, 15)] * 7, decimals)
    maps = np.stack(maps).astype(dtype)
    masks = np.stack(masks)
    result = pixel_metrics(maps, masks)
    labels, scores = masks.ravel(), maps.ravel().astype(np.float64)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert result["pixel_f1max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)
    expected_aupro = reference_aupro(list(maps), list(masks), 0.3)
    assert result["pixel_aupro"] == pytest.approx(expected_aupro, abs=1e-12)
    assert aupro(maps, masks) == result["pixel_aupro"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 0.5, 1.0])
def test_aupro_matches_slow_reference(seed, fpr_limit):
    rng = np.random.default_rng(100 + seed)
    maps, masks = random_images(rng, [(10, 9)] * 6, decimals=1 if seed % 2 else 2)
    expected = reference_aupro(maps, masks, fpr_limit)
    assert aupro(np.stack(maps), np.stack(masks), fpr_limit) == pytest.approx(expected, abs=1e-12)


def hand_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two images; image 0 holds one region of two diagonal pixels, image 1 one single-pixel region.

    Scores: region A = {0.9, 0.5}, region B = {0.7}; normals: one 0.8, one 0.5
    (tied with an anomalous pixel), ten 0.1. With 12 normal pixels and
    2 regions the PRO curve is
    (0,0) -> (0,1/4) -> (1/12,1/4) -> (1/12,3/4) -> (2/12,1) -> (1,1).
    """
    mask_0 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    map_0 = np.array([[0.9, 0.8, 0.1], [0.1, 0.5, 0.1], [0.1, 0.1, 0.1]])
    mask_1 = np.array([[0, 0, 0], [0, 0, 1]], dtype=np.uint8)
    map_1 = np.array([[0.5, 0.1, 0.1], [0.1, 0.1, 0.7]])
    return [map_0, map_1], [mask_0, mask_1]


@pytest.mark.parametrize(
    ("fpr_limit", "expected"),
    [
        # 1/4 * 1/12 + 1/12 * (3/4 + 1)/2 + (0.3 - 2/12) * 1, divided by 0.3
        (0.3, (1 / 48 + 7 / 96 + 0.3 - 1 / 6) / 0.3),
        # the limit cuts the diagonal tie step at x = 1/8 where y = 7/8
        (0.125, (1 / 48 + (1 / 24) * (3 / 4 + 7 / 8) / 2) / 0.125),
        (1 / 12, 0.25),
    ],
)
def test_aupro_hand_computed(fpr_limit, expected):
    maps, masks = hand_case()
    assert aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-12)
    assert pixel_metrics(maps, masks, fpr_limit)["pixel_aupro"] == pytest.approx(expected, abs=1e-12)


def test_aupro_all_scores_tied_is_diagonal():
    rng = np.random.default_rng(3)
    _, masks = random_images(rng, [(8, 8)] * 4, empty_every=4)
    maps = [np.full(mask.shape, 0.25, dtype=np.float32) for mask in masks]
    # the curve is the straight line (0,0) -> (1,1): area 0.3^2 / 2, divided by 0.3
    assert aupro(maps, masks) == pytest.approx(0.15, abs=1e-12)


def test_pixel_metrics_undefined_cases_are_none():
    maps = np.random.default_rng(0).random((3, 5, 5))
    no_anomaly = np.zeros(maps.shape, dtype=bool)
    all_anomaly = np.ones(maps.shape, dtype=bool)
    for masks in (no_anomaly, all_anomaly):
        assert pixel_metrics(maps, masks) == dict.fromkeys(
            ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")
        )
        assert aupro(maps, masks) is None


def test_list_of_different_sizes_equals_concatenated_result():
    rng = np.random.default_rng(11)
    maps, masks = random_images(rng, [(9, 13), (14, 6), (5, 5), (11, 10), (7, 12)], decimals=1)
    maps = [m.astype(np.float32) for m in maps]
    result = pixel_metrics(maps, masks, fpr_limit=0.2)
    labels, scores = flat(masks), flat(maps).astype(np.float64)
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert result["pixel_f1max"] == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)
    assert result["pixel_aupro"] == pytest.approx(reference_aupro(maps, masks, 0.2), abs=1e-12)


def test_list_input_equals_stacked_array_input():
    rng = np.random.default_rng(5)
    maps, masks = random_images(rng, [(8, 9)] * 5, decimals=None)
    assert pixel_metrics(maps, masks) == pixel_metrics(np.stack(maps), np.stack(masks))


def test_uint8_255_masks_equal_bool_masks():
    rng = np.random.default_rng(9)
    maps, masks = random_images(rng, [(8, 8)] * 4)
    as_uint8 = [mask.astype(np.uint8) * 255 for mask in masks]
    assert pixel_metrics(maps, as_uint8) == pixel_metrics(maps, masks)


def test_pixel_metrics_reject_bad_input():
    maps, masks = hand_case()
    with pytest.raises(ValueError):
        pixel_metrics(maps, masks[:1])
    with pytest.raises(ValueError):
        pixel_metrics([maps[0]], [masks[1]])
    with pytest.raises(ValueError):
        pixel_metrics(maps[0], masks[0])  # a single (H, W) array is not (N, H, W)
    for bad_limit in (0.0, 1.5):
        with pytest.raises(ValueError):
            aupro(maps, masks, bad_limit)
    with_nan = [maps[0].copy(), maps[1]]
    with_nan[0][2, 2] = np.nan
    with pytest.raises(ValueError):
        pixel_metrics(with_nan, masks)
