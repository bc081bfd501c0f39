"""`zsad predict`: score your own images."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import InvalidInputError
from ..method_names import set_methods_help
from ..plurals import counted
from . import calibrate as cal
from . import fewshot as fs
from . import options as opt
from .console import EXIT_BAD_INPUT, EXIT_INTERRUPTED, console, err_console
from .model_loading import check_model_options, compile_meta, load_predictor, warn_if_random


def predict(
    images: Annotated[List[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: opt.Out,
    model: opt.ModelOptions,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Score at or above which an image is labelled anomalous; also the level of the contour drawn on the overlays "
            "(default: 0.5, or the --calibration file's).",
        ),
    ] = None,
    calibration: cal.CalibrationFile = None,
    batch_size: opt.BatchSize = 8,
    num_workers: Annotated[int, typer.Option(min=0, help="Threads that decode images while the model runs (0 = none).")] = 0,
    reference: fs.Reference = None,
    fusion_weight: fs.FusionWeight = 0.5,
    set_size: opt.SetSize = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Run a model exported by `zsad export` with onnxruntime instead of "
                                                                "torch (same outputs).")] = None,
    compile: opt.Compile = "off",
    overwrite: opt.Overwrite = False,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted run in --out: images that have a row in its scores.csv are kept, "
                                              "the rest are scored (same model and threshold required).")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Score your own images: per image an overlay PNG and a 16-bit raw map, plus
    scores.csv and scores.json. Unreadable files are reported and skipped (exit status 2).
    Ctrl-C keeps every finished row; --resume finishes the rest (exit status 130)."""
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..discovery import find_images

    # Everything that needs no model is checked first (before torch is imported).
    if onnx is not None and compile != "off":
        raise InvalidInputError("--compile applies to torch models, not to --onnx (onnxruntime runs the exported graph)")
    found = find_images(images, IMAGE_SUFFIXES, exclude=[out])
    for line in found.skipped_summary():
        err_console.print(f"[yellow]skipped[/] {line}", highlight=False)
    if not found.paths:
        raise InvalidInputError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(map(str, images))}")
    if set_size is not None and onnx is not None:
        raise InvalidInputError("--set-size applies to methods that score sets of images, not to --onnx models")
    if reference is not None and onnx is None:
        fs.reference_paths(reference)
    if onnx is None:
        check_model_options(model)
    from ..engine.prediction import PredictionInterrupted, predict_files
    from ..methods.base import scores_sets as method_scores_sets

    if onnx is not None:
        from .export import load_onnx_predictor

        predictor, meta = load_onnx_predictor(onnx, model, reference)
        warn_if_random(bool(meta.get("pipeline_check")))
    else:
        predictor = load_predictor(model, compile)
        meta = {**predictor.detector.provenance(), **compile_meta(compile)}
    scores_sets = onnx is None and method_scores_sets(predictor.detector)
    if set_size is not None and not scores_sets:
        raise InvalidInputError(f"--set-size applies to methods that score sets of images ({set_methods_help()})")
    if scores_sets and calibration is not None:
        raise InvalidInputError(f"--method {predictor.detector.name} gives set-relative scores: --calibration does not apply")
    entry, threshold = cal.for_run(calibration, threshold, predictor, meta, predictor.meta if onnx is not None else None, reference)
    if reference is not None and not scores_sets:
        predictor = fs.with_reference_folder(predictor, reference, fusion_weight, meta)
    if not scores_sets and onnx is None and model.method is None and model.checkpoint is None and model.config is None:
        from ..engine.set_scoring import SET_METHOD_HINT, SUGGEST_SET_METHOD_FROM

        if len(found.paths) >= SUGGEST_SET_METHOD_FROM:
            err_console.print(SET_METHOD_HINT.format(n=len(found.paths)), highlight=False, soft_wrap=True)
    try:
        if scores_sets:
            summary = _predict_sets(
                predictor, found.paths, out, threshold, model, set_size, reference, batch_size, overwrite, resume, quiet, meta
            )
        else:
            summary = predict_files(
                predictor, found.paths, out, threshold, class_name=None, batch_size=batch_size, overwrite=overwrite,
                show_progress=not quiet, meta=meta, num_workers=num_workers, resume=resume, calibration=entry,
            )
    except PredictionInterrupted as stop:
        err_console.print(
            f"interrupted: {stop.done} of {counted(stop.total, 'image')} done; their rows are in {out / 'scores.csv'} and "
            f"{out / 'scores.json'}. To score the other {stop.total - stop.done}, run the same command with --resume.",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    scored = [row for row in summary.rows if not row["error"]]
    flagged = sum(row["label"] for row in scored)
    kept = f" ({summary.n_previous} kept from the earlier run)" if summary.n_previous else ""
    console.print(f"{counted(len(scored), 'image')} scored{kept}, {flagged} at or above {threshold:.6g}; results in {out}", highlight=False)
    for row in summary.rows:
        if row["error"]:
            err_console.print(f"[red]could not read[/] {row['path']}: {row['error']}", highlight=False)
    if found.skipped:
        unscored = counted(len(found.skipped), "entry", "entries")
        err_console.print(
            f"{unscored} in the input folders {'was' if len(found.skipped) == 1 else 'were'} not scored (listed above).", highlight=False
        )
    if summary.n_errors:
        raise typer.Exit(EXIT_BAD_INPUT)


def _predict_sets(predictor, paths, out, threshold, model, set_size, reference, batch_size, overwrite, resume, quiet, meta):
    """`zsad predict` for a set method (musc): one set per --class-names category folder
    (else all the images), --reference images joining every set."""
    from ..engine.set_scoring import group_by_class_folder, predict_sets

    groups = group_by_class_folder(paths, predictor.class_names.table if model.class_names else ())
    references = fs.reference_paths(reference) if reference is not None else []
    return predict_sets(predictor, groups, out, threshold, set_size, references, batch_size, overwrite, resume, not quiet, meta)
