"""`zsad test`: evaluate a predictor on one data set and write the reports."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibration import Calibration
from ..data import build_dataset
from ..errors import InvalidInputError
from ..fileio import check_can_write
from ..methods.base import scores_sets
from ..output_lock import claim_output_folder
from ..reports import metrics_markdown, write_metrics_report
from .evaluation import evaluate
from .predictor import Predictor
from .set_scoring import evaluate_sets

MAPS_DIR = "maps"


@dataclass
class ReportedEvaluation:
    report: dict[str, Any]
    markdown: str
    errors: list[dict[str, str]]
    written: list[Path]


def run_test(
    predictor: Predictor,
    data_spec: str,
    out_dir: Path,
    classes: list[str] | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    save_maps: int = 0,
    score_normalisation: str = "none",
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    calibration_path: Path | None = None,
    sample_score: str = "image",
    domain: str | None = None,
    set_size: int | None = None,
) -> ReportedEvaluation:
    """Evaluate on ``data_spec`` (KIND:PATH) and write metrics.json / metrics.md to out_dir,
    which the run holds for its whole duration (a second run into it is refused).
    ``calibration`` (a `zsad calibrate` file, checked against the model by the caller)
    adds the false-positive rate and recall at its thresholds for every class.
    ``sample_score``: "image" or "max-over-views" (see :func:`evaluate`). A data set
    without any image label is refused (score it with ``zsad predict``). ``domain``: the
    images' domain (None = the data-set kind's; see ``evaluation.evaluate``). A method that
    scores sets (MuSc) sees each category's test split as one set (or label-free subsets
    of ``set_size``), see :mod:`zsad.engine.set_scoring`."""
    if calibration is not None and score_normalisation != "none":
        raise InvalidInputError("--calibration thresholds hold for raw scores: use --score-normalisation none with it")
    set_method = scores_sets(predictor.detector)
    if set_method and (calibration is not None or sample_score != "image"):
        raise InvalidInputError(
            f"--method {predictor.detector.name} gives set-relative scores: --calibration and --sample-score do not apply"
        )
    if set_size is not None and not set_method:
        raise InvalidInputError(f"--set-size applies to methods that score sets of images (musc), not to {predictor.detector.name}")
    with claim_output_folder(out_dir):
        check_can_write([out_dir / "metrics.json", out_dir / "metrics.md"], overwrite)
        dataset = build_dataset(data_spec, classes=classes, image_size=predictor.image_size, split="test")
        if all(sample.label is None for sample in dataset.samples):
            raise InvalidInputError(
                f"{data_spec}: none of its {len(dataset)} images has a label, so there is nothing to evaluate; "
                "score them with `zsad predict` on their folder"
            )
        per_class_calibration = None
        if calibration is not None:
            keys = sorted({sample.class_name for sample in dataset.samples})
            per_class_calibration = calibration.for_classes(keys, calibration_path or "the calibration")
        if set_method:
            result = evaluate_sets(
                predictor.detector, dataset, predictor.device, batch_size=batch_size, num_workers=num_workers,
                precision=predictor.precision, set_size=set_size, save_maps=save_maps,
                maps_dir=out_dir / MAPS_DIR if save_maps else None, show_progress=show_progress,
            )
        else:
            result = evaluate(
                predictor.detector, dataset, predictor.class_names, predictor.device, batch_size=batch_size,
                num_workers=num_workers, precision=predictor.precision, save_maps=save_maps,
                maps_dir=out_dir / MAPS_DIR if save_maps else None, score_normalisation=score_normalisation,
                show_progress=show_progress, inference=predictor.inference,
                calibration=per_class_calibration, sample_score=sample_score, domain=domain,
            )
        report = {**(meta or {}), **result.report, "errors": result.errors}
        if calibration is not None:
            report["calibrated"]["file"] = str(calibration_path)
            report["calibrated"]["split"] = calibration.split  # the data set's normal images it came from
        written = write_metrics_report(report, out_dir, overwrite=overwrite)
    return ReportedEvaluation(report=report, markdown=metrics_markdown(report), errors=result.errors, written=written)
