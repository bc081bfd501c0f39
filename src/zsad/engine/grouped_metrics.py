"""Metrics over groups of a class's images: physical samples (max over views) and anomaly types."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..metrics import image_metrics, pixel_metrics_streamed
from .map_spill import DEFAULT_CHUNK_BYTES, SpilledMaps

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def max_over_views(scores: np.ndarray, labels: np.ndarray, groups: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """One score and label per physical sample.

    scores (N,) float, labels (N,) int with -1 unknown, groups (N,) sample ids (None: the
    image is its own sample). A sample's score is the max over its views; its label is
    1 when any view is anomalous, 0 when all views are known normal, -1 otherwise.
    Returns (scores (G,), labels (G,)) in order of each sample's first view.
    """
    slot: dict[object, int] = {}
    for index, group in enumerate(groups):
        slot.setdefault(("group", group) if group is not None else ("image", index), len(slot))
    positions = np.fromiter(
        (slot[("group", g) if g is not None else ("image", i)] for i, g in enumerate(groups)), dtype=np.int64, count=len(groups)
    )
    sample_scores = np.full(len(slot), -np.inf)
    np.maximum.at(sample_scores, positions, scores)
    any_anomalous = np.zeros(len(slot), dtype=bool)
    any_unknown = np.zeros(len(slot), dtype=bool)
    np.logical_or.at(any_anomalous, positions, labels == 1)
    np.logical_or.at(any_unknown, positions, labels < 0)
    sample_labels = np.where(any_anomalous, 1, np.where(any_unknown, -1, 0))
    return sample_scores, sample_labels


def known_image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Image metrics over the images whose label is known (labels >= 0)."""
    known = labels >= 0
    return image_metrics(scores[known], labels[known])


def selected_chunks(maps: SpilledMaps, keep: np.ndarray, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Chunks:
    """The spilled (maps, masks) chunks restricted to the rows where ``keep`` (N,) is True."""

    def chunks() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        offset = 0
        for chunk_maps, chunk_masks in maps.chunks(chunk_bytes):
            rows = keep[offset : offset + len(chunk_maps)]
            offset += len(chunk_maps)
            if rows.any():
                yield chunk_maps[rows], chunk_masks[rows]

    return chunks


def per_anomaly_type(
    scores: np.ndarray, labels: np.ndarray, anomaly_types: Sequence[str | None], maps: SpilledMaps | None
) -> dict[str, dict[str, Any]]:
    """Metrics of each anomaly type against all normal images of the class.

    scores (N,), labels (N,) (-1 unknown), anomaly_types (N,) (None for normal images and
    untyped anomalies), maps: the class's spilled maps in the same row order, or None
    without masks. Returns {type: {n_images, n_anomalous, image and pixel metrics}}.
    """
    types = np.asarray([t or "" for t in anomaly_types], dtype=object)
    result: dict[str, dict[str, Any]] = {}
    for anomaly_type in sorted({t for t in anomaly_types if t}):
        keep = (labels == 0) | ((labels == 1) & (types == anomaly_type))
        metrics: dict[str, Any] = {"n_images": int(keep.sum()), "n_anomalous": int((keep & (labels == 1)).sum())}
        metrics.update(known_image_metrics(scores[keep], labels[keep]))
        if maps is not None and len(maps):
            metrics.update(pixel_metrics_streamed(selected_chunks(maps, keep)))
        result[anomaly_type] = metrics
    return result
