"""Exact image- and pixel-level anomaly-detection metrics.

Definitions (every distinct score is a threshold; a sample is "predicted
anomalous" at threshold ``t`` when its score is ``>= t``):

* AUROC    -- area under the ROC curve, ties count one half
              (equal to ``sklearn.metrics.roc_auc_score``).
* AP       -- step-wise average precision without interpolation
              (equal to ``sklearn.metrics.average_precision_score``).
* F1-max   -- the largest ``2PR / (P + R)`` over all thresholds
              (as from ``sklearn.metrics.precision_recall_curve``).
* AUPRO    -- area under the per-region-overlap (PRO) vs false-positive-rate
              curve up to ``fpr_limit``, divided by ``fpr_limit``. Regions are
              the 8-connected components of each ground-truth mask; PRO is the
              mean over all regions of all images of the fraction of the
              region's pixels predicted anomalous; FPR is over all normal
              pixels of all images. The curve is integrated with the trapezoid
              rule, linearly interpolated at ``fpr_limit``.

How it stays fast on hundreds of millions of pixels: the normal scores are
sorted once, in place. Every curve above only changes at the (far fewer)
distinct anomalous scores ``t``, and at each of them ``searchsorted`` into the
sorted normal scores gives ``#normal >= t`` and ``#normal > t``. Between two
consecutive anomalous scores the curves only move along the normal axis, so
these counts give every curve point that matters, ties included: a threshold
shared by normal and anomalous scores makes a diagonal step that the
trapezoid rule integrates exactly. All counts are integers and all sums are
float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["image_metrics", "pixel_metrics", "pixel_metrics_streamed", "aupro"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class _ThresholdSweep:
    """Counts at every distinct anomalous score, in descending score order.

    All arrays have shape (K,), K = number of distinct anomalous scores.
    ``anomalous_at``: anomalous samples whose score equals the threshold;
    ``normal_ge`` / ``normal_gt``: normal samples with score ``>=`` / ``>``
    the threshold; ``weight_at``: summed per-sample weights of the anomalous
    samples at the threshold (None when no weights were given).
    """

    anomalous_at: np.ndarray
    normal_ge: np.ndarray
    normal_gt: np.ndarray
    weight_at: np.ndarray | None
    n_anomalous: int
    n_normal: int


def _group_anomalous(
    anomalous: np.ndarray, anomalous_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Distinct anomalous scores in descending order with their counts and summed weights.

    anomalous: (P,) scores; anomalous_weights: optional (P,) float64.
    Returns (values (K,), counts (K,) int64, weight sums (K,) float64 or None).
    """
    if anomalous_weights is None:
        values, counts = np.unique(anomalous, return_counts=True)
        weight_at = None
    else:
        order = np.argsort(anomalous)
        ordered = anomalous[order]
        is_first = np.empty(ordered.shape, dtype=bool)
        is_first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=is_first[1:])
        starts = np.flatnonzero(is_first)
        del is_first
        values = ordered[starts]
        del ordered
        weight_at = np.add.reduceat(anomalous_weights[order], starts)[::-1]
        del order
        counts = np.diff(starts, append=anomalous.size)
        del starts
    return values[::-1], counts[::-1].astype(np.int64, copy=False), weight_at


def _count_normal(normal_sorted: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(#normal >= v, #normal > v) for every v of ``values``; normal_sorted ascending."""
    if values.dtype != normal_sorted.dtype:
        # Never let searchsorted promote the (large) normal array.
        raise TypeError("normal and anomalous scores must share a dtype")
    n_normal = normal_sorted.size
    normal_ge = n_normal - np.searchsorted(normal_sorted, values, side="left")
    normal_gt = n_normal - np.searchsorted(normal_sorted, values, side="right")
    return normal_ge.astype(np.int64, copy=False), normal_gt.astype(np.int64, copy=False)


def _sweep(
    normal_sorted: np.ndarray,
    anomalous: np.ndarray,
    anomalous_weights: np.ndarray | None = None,
) -> _ThresholdSweep:
    """Group anomalous scores by distinct value and count normals around each.

    Args:
        normal_sorted: (M,) normal scores, ascending, no NaN.
        anomalous: (P,) anomalous scores (any order), same dtype, no NaN.
        anomalous_weights: optional (P,) float64 weight per anomalous score.
    """
    if anomalous.dtype != normal_sorted.dtype:
        raise TypeError("normal and anomalous scores must share a dtype")
    values, counts, weight_at = _group_anomalous(anomalous, anomalous_weights)
    normal_ge, normal_gt = _count_normal(normal_sorted, values)
    return _ThresholdSweep(counts, normal_ge, normal_gt, weight_at, int(anomalous.size), int(normal_sorted.size))


def _auroc(sweep: _ThresholdSweep) -> float:
    """Mann-Whitney AUROC: P(anomalous > normal) + 0.5 P(anomalous == normal)."""
    normal_below = sweep.n_normal - sweep.normal_ge
    normal_equal = sweep.normal_ge - sweep.normal_gt
    # Twice the U statistic, as an exact integer (fits int64: <= 2 * P * M).
    twice_u = int(np.dot(sweep.anomalous_at, 2 * normal_below + normal_equal))
    return twice_u / (2 * sweep.n_anomalous * sweep.n_normal)


def _true_positives(sweep: _ThresholdSweep) -> np.ndarray:
    """(K,) number of anomalous samples with score >= each threshold."""
    return np.cumsum(sweep.anomalous_at)


def _average_precision(sweep: _ThresholdSweep) -> float:
    """Sum over thresholds of (recall gain) x (precision); recall only gains at anomalous scores."""
    tp = _true_positives(sweep).astype(np.float64)
    precision = tp / (tp + sweep.normal_ge)
    return float(np.dot(sweep.anomalous_at, precision) / sweep.n_anomalous)


def _f1_max(sweep: _ThresholdSweep) -> float:
    """max 2TP / (TP + FP + P); thresholds between anomalous scores only add FP."""
    tp = _true_positives(sweep).astype(np.float64)
    return float(np.max(2.0 * tp / (tp + sweep.normal_ge + sweep.n_anomalous)))


def _pro_curve(sweep: _ThresholdSweep) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the PRO-vs-FPR polyline, each (2K + 2,), x non-decreasing.

    At the j-th anomalous threshold the curve runs horizontally (only normal
    scores in between) to ``(#normal > t_j, PRO_{j-1})``, then to
    ``(#normal >= t_j, PRO_j)``: vertically, or diagonally when normal scores
    tie with ``t_j``. It starts at (0, 0) and ends at (1, PRO_K = 1).
    """
    if sweep.weight_at is None:
        raise ValueError("the PRO curve needs per-pixel region weights")
    pro = np.cumsum(sweep.weight_at)
    k = pro.size
    x = np.empty(2 * k + 2, dtype=np.float64)
    y = np.empty(2 * k + 2, dtype=np.float64)
    x[0], y[0] = 0.0, 0.0
    x[1:-1:2] = sweep.normal_gt / sweep.n_normal
    x[2:-1:2] = sweep.normal_ge / sweep.n_normal
    y[1] = 0.0
    y[3:-1:2] = pro[:-1]
    y[2:-1:2] = pro
    x[-1], y[-1] = 1.0, pro[-1]
    return x, y


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the polyline (x, y) for x in [x[0], limit].

    x: (V,) non-decreasing with x[-1] >= limit; y: (V,). The last segment is
    cut at ``limit`` with y linearly interpolated there.
    """
    inside = int(np.searchsorted(x, limit, side="right"))  # vertices with x <= limit
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) * 0.5))
    if inside < x.size:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_limit) * 0.5
    return area


def _aupro(sweep: _ThresholdSweep, fpr_limit: float) -> float:
    x, y = _pro_curve(sweep)
    return _area_up_to(x, y, fpr_limit) / fpr_limit


def _check_fpr_limit(fpr_limit: float) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit


# --------------------------------------------------------------------------- image level


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Image-level AUROC, AP and F1-max.

    Args:
        scores: (N,) anomaly scores, higher = more anomalous.
        labels: (N,) int or bool, 1 / True = anomalous, 0 / False = normal.

    Returns:
        ``{"image_auroc", "image_ap", "image_f1max"}`` as Python floats, all
        None when only one label is present.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1 or boolean")
    scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    is_anomalous = labels.astype(bool)
    normal = np.sort(scores[~is_anomalous])
    anomalous = scores[is_anomalous]
    keys = ("image_auroc", "image_ap", "image_f1max")
    if normal.size == 0 or anomalous.size == 0:
        return dict.fromkeys(keys)
    sweep = _sweep(normal, anomalous)
    return dict(zip(keys, (_auroc(sweep), _average_precision(sweep), _f1_max(sweep))))


# --------------------------------------------------------------------------- pixel level


@dataclass(frozen=True)
class _PixelScores:
    """All pixels of a set of images, split by ground truth.

    ``normal_sorted``: (M,) normal-pixel scores, ascending.
    ``anomalous``: (P,) anomalous-pixel scores, image by image, row-major.
    ``region_weight``: (P,) float64, ``1 / (|region| * n_regions)`` for the
    8-connected ground-truth region each anomalous pixel belongs to.
    """

    normal_sorted: np.ndarray
    anomalous: np.ndarray
    region_weight: np.ndarray


def _image_pairs(maps, masks) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair up (H, W) maps and masks from (N, H, W) arrays or sequences of (H, W) arrays."""
    for name, value in (("maps", maps), ("masks", masks)):
        if isinstance(value, np.ndarray) and value.ndim != 3:
            raise ValueError(f"{name} as one array must be (N, H, W), got shape {value.shape}")
        if not isinstance(value, (np.ndarray, Sequence)):
            raise TypeError(f"{name} must be an (N, H, W) array or a sequence of (H, W) arrays")
    maps_list, masks_list = list(maps), list(masks)
    if len(maps_list) != len(masks_list):
        raise ValueError(f"{len(maps_list)} maps but {len(masks_list)} masks")
    pairs = []
    for index, (score_map, mask) in enumerate(zip(maps_list, masks_list)):
        score_map, mask = np.asarray(score_map), np.asarray(mask)
        if score_map.ndim != 2 or score_map.shape != mask.shape:
            raise ValueError(
                f"image {index}: map {score_map.shape} and mask {mask.shape} must be equal 2-D shapes"
            )
        pairs.append((score_map, mask))
    return pairs


def _anomalous_pixels(score_map: np.ndarray, is_anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One image's anomalous-pixel scores (P_i,), 1 / |region| of each (P_i,) float64
    (8-connected ground-truth regions), and its number of regions."""
    regions, n_regions = ndimage.label(is_anomalous, structure=_EIGHT_CONNECTED)
    region_sizes = np.bincount(regions.ravel())
    return score_map[is_anomalous], 1.0 / region_sizes[regions[is_anomalous]], int(n_regions)


def _collect_pixel_scores(maps, masks) -> _PixelScores:
    """Split every pixel into normal / anomalous scores and label the GT regions.

    Memory: one copy of the normal scores (in float32, or float64 when the
    maps are float64 / integer) plus a few arrays of the anomalous-pixel size.
    """
    pairs = _image_pairs(maps, masks)
    if not pairs:
        raise ValueError("no images given")
    dtype = np.result_type(*(score_map.dtype for score_map, _ in pairs), np.float32)
    n_anomalous_per_image = [int(np.count_nonzero(mask)) for _, mask in pairs]
    n_anomalous = sum(n_anomalous_per_image)
    n_normal = sum(mask.size for _, mask in pairs) - n_anomalous

    normal = np.empty(n_normal, dtype=dtype)
    anomalous = np.empty(n_anomalous, dtype=dtype)
    inverse_region_size = np.empty(n_anomalous, dtype=np.float64)
    n_regions = 0
    normal_at = anomalous_at = 0
    for (score_map, mask), count in zip(pairs, n_anomalous_per_image):
        if count == 0:
            normal[normal_at : normal_at + mask.size] = score_map.ravel()
            normal_at += mask.size
            continue
        is_anomalous = mask != 0
        normal[normal_at : normal_at + mask.size - count] = score_map[~is_anomalous]
        normal_at += mask.size - count
        scores, inverse_sizes, n_image_regions = _anomalous_pixels(score_map, is_anomalous)
        anomalous[anomalous_at : anomalous_at + count] = scores
        inverse_region_size[anomalous_at : anomalous_at + count] = inverse_sizes
        anomalous_at += count
        n_regions += n_image_regions

    normal.sort()
    if (normal.size and np.isnan(normal[-1])) or np.isnan(anomalous).any():
        raise ValueError("anomaly maps contain NaN")
    inverse_region_size /= max(n_regions, 1)  # now 1 / (|region| * n_regions)
    return _PixelScores(normal, anomalous, inverse_region_size)


def pixel_metrics(maps, masks, fpr_limit: float = 0.3) -> dict[str, float | None]:
    """Pixel-level AUROC, AP, F1-max and AUPRO over all pixels of all images.

    Args:
        maps: (N, H, W) float16/32/64 anomaly maps, or a sequence of (H, W)
            maps whose sizes may differ between images.
        masks: ground truth with the same layout, bool or integer (nonzero =
            anomalous).
        fpr_limit: upper FPR bound of the AUPRO integral, in (0, 1].

    Returns:
        ``{"pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"}`` as
        Python floats; all None when there is no anomalous or no normal pixel.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    pixels = _collect_pixel_scores(maps, masks)
    keys = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")
    if pixels.normal_sorted.size == 0 or pixels.anomalous.size == 0:
        return dict.fromkeys(keys)
    sweep = _sweep(pixels.normal_sorted, pixels.anomalous, pixels.region_weight)
    del pixels  # the sorted normal scores are the largest buffer; the sweep has all it needs
    values = (_auroc(sweep), _average_precision(sweep), _f1_max(sweep), _aupro(sweep, fpr_limit))
    return dict(zip(keys, values))


def pixel_metrics_streamed(
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], fpr_limit: float = 0.3
) -> dict[str, float | None]:
    """:func:`pixel_metrics` over images that arrive in chunks, never all in memory.

    Args:
        chunks: called twice; every call yields the same (maps (n, H, W), masks
            (n, H, W)) chunks in the same order (e.g. read back from a file).
        fpr_limit: as in :func:`pixel_metrics`.

    Returns the same values as :func:`pixel_metrics` on all images at once, to the last
    bit: the first pass keeps only the anomalous pixels (their distinct scores, counts
    and region weights); the second counts, chunk by chunk, the normal pixels at or
    above each distinct anomalous score (integer sums). Memory: one chunk plus the
    anomalous pixels, whatever the number of normal pixels.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    keys = ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")
    anomalous_parts, weight_parts = [], []
    n_regions = n_normal = 0
    dtype = None
    for maps, masks in chunks():
        for score_map, mask in _image_pairs(maps, masks):
            dtype = np.result_type(score_map.dtype, np.float32) if dtype is None else dtype
            is_anomalous = mask != 0
            if np.isnan(score_map).any():
                raise ValueError("anomaly maps contain NaN")
            n_normal += int(mask.size - np.count_nonzero(is_anomalous))
            if is_anomalous.any():
                scores, inverse_sizes, count = _anomalous_pixels(score_map, is_anomalous)
                anomalous_parts.append(scores.astype(dtype, copy=False))
                weight_parts.append(inverse_sizes)
                n_regions += count
    if dtype is None:
        raise ValueError("no images given")
    if n_normal == 0 or not anomalous_parts:
        return dict.fromkeys(keys)
    anomalous = np.concatenate(anomalous_parts)
    weights = np.concatenate(weight_parts) / max(n_regions, 1)
    del anomalous_parts, weight_parts
    values, counts, weight_at = _group_anomalous(anomalous, weights)
    n_anomalous = int(anomalous.size)
    del anomalous, weights
    normal_ge = np.zeros(values.size, dtype=np.int64)
    normal_gt = np.zeros(values.size, dtype=np.int64)
    for maps, masks in chunks():
        normal = np.asarray(maps, dtype=dtype)[np.asarray(masks) == 0]
        normal.sort()
        chunk_ge, chunk_gt = _count_normal(normal, values)
        normal_ge += chunk_ge
        normal_gt += chunk_gt
    sweep = _ThresholdSweep(counts, normal_ge, normal_gt, weight_at, n_anomalous, n_normal)
    values_out = (_auroc(sweep), _average_precision(sweep), _f1_max(sweep), _aupro(sweep, fpr_limit))
    return dict(zip(keys, values_out))


def aupro(maps, masks, fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the PRO curve up to ``fpr_limit`` (see module docstring).

    Args and layouts as in :func:`pixel_metrics`. Returns None when there is
    no anomalous or no normal pixel.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    pixels = _collect_pixel_scores(maps, masks)
    if pixels.normal_sorted.size == 0 or pixels.anomalous.size == 0:
        return None
    sweep = _sweep(pixels.normal_sorted, pixels.anomalous, pixels.region_weight)
    del pixels
    return _aupro(sweep, fpr_limit)
