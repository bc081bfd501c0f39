"""Evaluate a detector on a labelled data set: per-class metrics and their mean."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..calibration import ClassCalibration, calibrated_rates
from ..data import AnomalyDataset, Sample, collate, kind_domain
from ..errors import InvalidInputError
from ..imageio import read_image
from ..methods.base import AnomalyDetector
from ..metrics import pixel_metrics_streamed
from ..reports import mean_over_classes
from ..settings import SAMPLE_SCORES, SCORE_NORMALISATIONS
from ..text import ClassNames
from ..viz import comparison_panel
from .compilation import InferenceCall
from .grouped_metrics import known_image_metrics, max_over_views, per_anomaly_type
from .map_spill import SpilledMaps
from .runtime import autocast, image_counter

PANEL_SIDE = 512


@dataclass
class ClassPredictions:
    """Everything predicted for one category.

    scores: (N,), labels: (N,) with -1 unknown; samples: (N,) the data set's entry of each
    row; maps: the (S, S) maps and masks, spilled to disk (only for sets with masks).
    """

    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    maps: SpilledMaps | None = None


@dataclass
class EvaluationResult:
    report: dict[str, Any]
    errors: list[dict[str, str]]


def _normalised_scores(predictions: ClassPredictions, normalisation: str) -> np.ndarray:
    scores = np.asarray(predictions.scores, dtype=np.float64)
    if normalisation == "per-class-minmax" and scores.size:
        # Transductive: uses every test score of the class. Evaluation option only.
        span = scores.max() - scores.min()
        scores = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    return scores


def _class_metrics(
    predictions: ClassPredictions, has_masks: bool, normalisation: str, sample_score: str = "image"
) -> dict[str, Any]:
    scores = _normalised_scores(predictions, normalisation)
    labels = np.asarray(predictions.labels)
    result: dict[str, Any] = {
        "n_images": int(len(labels)),
        "n_anomalous": int((labels == 1).sum()),
    }
    if sample_score == "max-over-views":
        scores, labels = max_over_views(scores, labels, [s.group for s in predictions.samples])
        result["n_samples"] = len(labels)
    result.update(known_image_metrics(scores, labels))  # all None without both labels
    if has_masks and predictions.maps is not None and len(predictions.maps):
        result.update(pixel_metrics_streamed(predictions.maps.chunks))
    return result


def _anomaly_type_metrics(
    per_class: dict[str, ClassPredictions], has_masks: bool, normalisation: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """{class: {anomaly type: metrics}} for the classes whose anomalies carry a type."""
    report = {}
    for key in sorted(per_class):
        predictions = per_class[key]
        types = [s.anomaly_type for s in predictions.samples]
        if any(types):
            scores = _normalised_scores(predictions, normalisation)
            maps = predictions.maps if has_masks else None
            report[key] = per_anomaly_type(scores, np.asarray(predictions.labels), types, maps)
    return report


def evaluate(
    detector: AnomalyDetector,
    dataset: AnomalyDataset,
    class_names: ClassNames,
    device: torch.device,
    batch_size: int = 8,
    num_workers: int = 0,
    precision: str = "fp32",
    save_maps: int = 0,
    maps_dir: Path | None = None,
    score_normalisation: str = "none",
    show_progress: bool = True,
    spill_dir: Path | None = None,
    inference: InferenceCall | None = None,
    calibration: dict[str, ClassCalibration] | None = None,
    sample_score: str = "image",
    domain: str | None = None,
) -> EvaluationResult:
    """Run ``detector`` over ``dataset`` and compute the protocol's metrics per class.

    The detector scores the images as ``domain`` (None = the data-set kind's domain, else
    the detector's own; see ``AnomalyDetector.scoring_domain``).

    save_maps: how many comparison panels (image | overlay | ground truth) to write per
    class into ``maps_dir``. Items that cannot be read are skipped and listed in
    ``errors``. Returns the report dict written as metrics.json (without run metadata).
    The maps wait for the pixel metrics in a temporary folder under ``spill_dir``
    (None = the system's temporary folder), removed afterwards: memory does not grow
    with the number of images. ``inference``: the detector's call, e.g. compiled (None =
    the detector called eagerly); a compiled call pads every batch to ``batch_size``.
    ``calibration``: per class key, the calibrated thresholds whose false-positive rate
    and recall the report gives beside the threshold-free metrics (``report["calibrated"]``).
    ``sample_score``: "image", or "max-over-views": the image metrics score each physical
    sample (``Sample.group``, e.g. Real-IAD's 5 views) by the max over its views; the
    pixel metrics stay per image. Classes whose anomalies carry a type (MVTec LOCO's
    logical / structural) also get each type's metrics against all normal images,
    under ``report["per_anomaly_type"]``.
    """
    if score_normalisation not in SCORE_NORMALISATIONS:
        raise InvalidInputError(f"score normalisation must be one of {SCORE_NORMALISATIONS}")
    if sample_score not in SAMPLE_SCORES:
        raise InvalidInputError(f"sample score must be one of {SAMPLE_SCORES}")
    domain = domain or kind_domain(dataset.kind)
    with tempfile.TemporaryDirectory(prefix="zsad-maps-", dir=spill_dir) as folder, detector.scoring_domain(domain):
        return _evaluate(
            detector, dataset, class_names, device, batch_size, num_workers, precision, save_maps, maps_dir,
            score_normalisation, show_progress, Path(folder), inference, calibration, sample_score,
        )


def _evaluate(
    detector, dataset, class_names, device, batch_size, num_workers, precision, save_maps, maps_dir,
    score_normalisation, show_progress, spill_folder: Path, inference: InferenceCall | None,
    calibration: dict[str, ClassCalibration] | None, sample_score: str,
) -> EvaluationResult:
    detector.eval().to(device)
    inference = inference or InferenceCall(detector, device)
    inference.reserve(min(batch_size, len(dataset)))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    per_class: dict[str, ClassPredictions] = {}
    saved: dict[str, int] = {}
    errors: list[dict[str, str]] = []
    counter = image_counter(len(dataset), f"evaluate {dataset.kind}", enabled=show_progress)
    first_item = 0  # the loader reads the items in order: batch row r is item batch_start + positions[r]
    for batch in loader:
        batch_start, first_item = first_item, first_item + batch.size
        counter.update(len(batch) + len(batch.unreadable))
        errors.extend({"path": path, "error": error} for path, error in batch.unreadable)
        if not len(batch):
            continue
        images = batch.images.to(device)
        with torch.no_grad(), autocast(device, precision):
            anomaly_maps, pred_scores = inference(images, [class_names.resolve(key) for key in batch.class_names])
        maps = anomaly_maps.float().cpu().numpy()
        scores = pred_scores.float().cpu().numpy()
        masks = batch.masks[:, 0].numpy() > 0.5
        for row, key in enumerate(batch.class_names):
            store = per_class.setdefault(key, ClassPredictions())
            store.scores.append(float(scores[row]))
            store.labels.append(int(batch.labels[row]))
            store.samples.append(dataset.samples[batch_start + batch.positions[row]])
            if dataset.has_masks:
                if store.maps is None:
                    store.maps = SpilledMaps(spill_folder, f"class{len(per_class):04d}", maps[row].shape)
                store.maps.append(maps[row], masks[row])
            if maps_dir is not None and saved.get(key, 0) < save_maps:
                saved[key] = saved.get(key, 0) + 1
                _save_panel(maps_dir, batch.paths[row], key, maps[row], masks[row] if batch.has_mask[row] else None, float(scores[row]))
    for store in per_class.values():
        if store.maps is not None:
            store.maps.close()
    counter.close()
    metrics = {
        key: _class_metrics(per_class[key], dataset.has_masks, score_normalisation, sample_score)
        for key in sorted(per_class)
    }
    report = {
        "dataset": f"{dataset.kind}:{dataset.root}",
        "domain": detector.domain,
        "score_normalisation": score_normalisation,
        "per_class": metrics,
        "mean": mean_over_classes(metrics),
        "n_errors": len(errors),
    }
    if calibration is not None:
        report["calibrated"] = _calibrated_report(per_class, calibration)
    if sample_score != "image":
        report["sample_score"] = sample_score
    by_type = _anomaly_type_metrics(per_class, dataset.has_masks, score_normalisation)
    if by_type:
        report["per_anomaly_type"] = by_type
        types = sorted({t for per_type in by_type.values() for t in per_type})
        report["mean_per_anomaly_type"] = {
            t: mean_over_classes({c: per_type[t] for c, per_type in by_type.items() if t in per_type}) for t in types
        }
    return EvaluationResult(report=report, errors=errors)


def _calibrated_report(per_class: dict[str, ClassPredictions], calibration: dict[str, ClassCalibration]) -> dict[str, Any]:
    """Per class, the rates at its calibrated thresholds, and their mean over the classes."""
    rows = {
        key: calibrated_rates(store.scores, store.labels, calibration[key], store.maps.chunks() if store.maps is not None else None)
        for key, store in sorted(per_class.items())
    }
    mean = {}
    for name in ("fpr", "recall", "pixel_fpr", "pixel_recall"):
        values = [row[name] for row in rows.values() if row[name] is not None]
        mean[name] = sum(values) / len(values) if values else None
    return {"per_class": rows, "mean": mean}


def _save_panel(maps_dir: Path, image_path: str, key: str, anomaly_map: np.ndarray, mask: np.ndarray | None, score: float) -> None:
    """Image | overlay | ground truth at the image's own aspect ratio (map and mask, square at
    the model's size, are stretched back to it), the longer side at most PANEL_SIDE."""
    image = read_image(image_path)
    image.thumbnail((PANEL_SIDE, PANEL_SIDE))
    panel = comparison_panel(image, anomaly_map, mask=mask, score=score, title=Path(image_path).name)
    target = maps_dir / key
    target.mkdir(parents=True, exist_ok=True)
    source = Path(image_path)
    # MVTec-like sets repeat file names across defect folders: keep the folder in the name.
    panel.save(target / f"{source.parent.name}_{source.stem}.png")
