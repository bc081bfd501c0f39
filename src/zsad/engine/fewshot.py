"""Few-shot inference and evaluation: reference images -> memory bank -> fused maps.

``zsad predict --reference DIR`` puts every image of DIR in one bank used for all inputs.
``zsad test --shots K --shot-seed S ...`` draws, per seed and per class, K normal images
from that class's training split (``train/good``), evaluates, and reports the mean and
standard deviation over the seeds.
"""
from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data import build_dataset
from ..data.layouts.common import IMAGE_SUFFIXES
from ..data.transforms import EvalTransform
from ..discovery import reference_images
from ..errors import InvalidInputError
from ..fileio import atomic_write_text, check_can_write
from ..imageio import read_image
from ..methods.fewshot import FewShotDetector, FewShotSettings
from ..reports import METRIC_LABELS, METRIC_ORDER, format_percent, mean_over_classes, metrics_markdown, write_metrics_report
from .evaluation import evaluate
from .predictor import Predictor
from .scorer import References, Scorer, files_digest

COUNT_KEYS = ("n_images", "n_anomalous")  # the same for every seed


def load_reference_images(paths: Sequence[Path], image_size: int) -> torch.Tensor:
    """Image files -> (K, 3, S, S) preprocessed like test images. Raises on an unreadable
    file (a reference is never silently dropped)."""
    if not paths:
        raise InvalidInputError("no reference images: give at least one normal image")
    transform = EvalTransform(image_size)
    return torch.stack([transform(read_image(path), None)[0] for path in paths])


def draw_reference_paths(data_spec: str, class_key: str, shots: int, seed: int) -> list[Path]:
    """K normal training images of one class, drawn without replacement with ``seed``
    from the sorted list of that class's training split."""
    if shots < 1:
        raise InvalidInputError(f"--shots must be >= 1, got {shots}")
    train = build_dataset(data_spec, classes=[class_key], split="train")
    normal = sorted(sample.image_path for sample in train.samples if sample.label == 0)
    if len(normal) < shots:
        raise InvalidInputError(f"class {class_key!r} has {len(normal)} normal training images, fewer than --shots {shots}")
    return sorted(random.Random(f"{seed}:{class_key}").sample(normal, shots))


def with_reference_folder(scorer: Scorer, reference: Path, weight: float) -> Scorer:
    """``scorer`` in few-shot mode with every image under ``reference`` in one memory bank
    used for all inputs (``zsad predict/serve --reference``); its identity records the
    references' content hash, their number and the fusion weight."""
    paths = reference_images(reference, IMAGE_SUFFIXES)
    described = References(files_digest(paths), len(paths), weight)
    settings = FewShotSettings(weight=weight)
    return scorer.with_references(load_reference_images(paths, scorer.image_size), settings, described)


def _few_shot_detector(
    predictor: Predictor, data_spec: str, classes: list[str], shots: int, seed: int, settings: FewShotSettings
) -> tuple[FewShotDetector, dict[str, list[str]]]:
    detector = FewShotDetector(predictor.detector, settings)
    drawn: dict[str, list[str]] = {}
    for key in classes:
        paths = draw_reference_paths(data_spec, key, shots, seed)
        drawn[key] = [str(path) for path in paths]
        images = load_reference_images(paths, predictor.image_size).to(predictor.device)
        detector.add_references(images, predictor.class_names.resolve(key))
    return detector, drawn


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.pstdev(present) if len(present) > 1 else 0.0


def run_fewshot_test(
    predictor: Predictor,
    data_spec: str,
    out_dir: Path,
    shots: int,
    seeds: Sequence[int],
    settings: FewShotSettings,
    classes: list[str] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    score_normalisation: str = "none",
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``predictor``'s detector with K references per class for every seed; write
    metrics.json / metrics.md whose per-class and mean values are averages over the seeds,
    plus ``few_shot`` (the standard deviation of every mean metric over the seeds, the
    per-seed means and the references drawn)."""
    if not seeds:
        raise InvalidInputError("give at least one --shot-seed")
    predictor.refuse_compiled()
    check_can_write([out_dir / "metrics.json", out_dir / "metrics.md"], overwrite)
    dataset = build_dataset(data_spec, classes=classes, image_size=predictor.image_size, split="test")
    runs = []
    for seed in seeds:
        few_shot, drawn = _few_shot_detector(predictor, data_spec, dataset.classes, shots, seed, settings)
        result = evaluate(
            few_shot, dataset, predictor.class_names, predictor.device, batch_size=batch_size,
            num_workers=num_workers, precision=predictor.precision, score_normalisation=score_normalisation,
            show_progress=show_progress,
        )
        runs.append((seed, result, drawn))
    first = runs[0][1].report["per_class"]
    per_class = {
        key: {
            name: value if name in COUNT_KEYS else _mean_std([run.report["per_class"][key].get(name) for _, run, _ in runs])[0]
            for name, value in first[key].items()
        }
        for key in first
    }
    seed_means = [run.report["mean"] for _, run, _ in runs]
    std = {metric: _mean_std([m.get(metric) for m in seed_means])[1] for metric in METRIC_ORDER}
    report = {
        **(meta or {}),
        "dataset": runs[0][1].report["dataset"],
        "score_normalisation": score_normalisation,
        "shots": shots,
        "fusion_weight": settings.weight,
        "per_class": per_class,
        "mean": mean_over_classes(per_class),
        "few_shot": {
            "seeds": list(seeds),
            "std_over_seeds": std,
            "per_seed": [{"seed": seed, "mean": run.report["mean"], "references": drawn} for seed, run, drawn in runs],
        },
        "errors": runs[0][1].errors,
    }
    write_metrics_report(report, out_dir, overwrite=True)
    atomic_write_text(out_dir / "metrics.md", fewshot_markdown(report))
    return report


def fewshot_markdown(report: dict[str, Any]) -> str:
    """The metrics page plus a mean ± std (over seeds) table of the mean metrics."""
    std = report["few_shot"]["std_over_seeds"]
    metrics = [m for m in METRIC_ORDER if report["mean"].get(m) is not None]
    seeds = report["few_shot"]["seeds"]
    lines = [
        metrics_markdown(report).rstrip(),
        "",
        f"## {report['shots']}-shot, mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))})",
        "",
        "| " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
        "|" + "---:|" * len(metrics),
        "| " + " | ".join(f"{format_percent(report['mean'][m])} ± {format_percent(std[m])}" for m in metrics) + " |",
        "",
    ]
    return "\n".join(lines)
