"""`zsad test`: evaluate a predictor on one data set and write the reports."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    set_size: int | None = None,
) -> ReportedEvaluation:
    """Evaluate on ``data_spec`` (KIND:PATH) and write metrics.json / metrics.md to out_dir,
    which the run holds for its whole duration (a second run into it is refused). A method
    that scores sets (MuSc) sees each category's test split as one set (or label-free
    subsets of ``set_size``), see :mod:`zsad.engine.set_scoring`."""
    with claim_output_folder(out_dir):
        check_can_write([out_dir / "metrics.json", out_dir / "metrics.md"], overwrite)
        dataset = build_dataset(data_spec, classes=classes, image_size=predictor.image_size, split="test")
        if scores_sets(predictor.detector):
            result = evaluate_sets(
                predictor.detector, dataset, predictor.device, batch_size=batch_size, num_workers=num_workers,
                precision=predictor.precision, set_size=set_size, save_maps=save_maps,
                maps_dir=out_dir / MAPS_DIR if save_maps else None, show_progress=show_progress,
            )
        elif set_size is not None:
            raise InvalidInputError(f"--set-size applies to methods that score sets of images (musc), not to {predictor.detector.name}")
        else:
            result = evaluate(
                predictor.detector, dataset, predictor.class_names, predictor.device, batch_size=batch_size,
                num_workers=num_workers, precision=predictor.precision, save_maps=save_maps,
                maps_dir=out_dir / MAPS_DIR if save_maps else None, score_normalisation=score_normalisation,
                show_progress=show_progress, inference=predictor.inference,
            )
        report = {**(meta or {}), **result.report, "errors": result.errors}
        written = write_metrics_report(report, out_dir, overwrite=overwrite)
    return ReportedEvaluation(report=report, markdown=metrics_markdown(report), errors=result.errors, written=written)
