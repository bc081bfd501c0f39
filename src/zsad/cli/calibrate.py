"""`zsad calibrate`: thresholds from normal images alone, and the `--calibration FILE`
option that predict, test, serve and export take."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..data.spec import check_data_spec
from ..errors import InvalidInputError
from ..settings import CALIBRATION_SPLITS
from . import checks
from . import options as opt
from .console import EXIT_BAD_INPUT, console, err_console
from .model_loading import load_predictor

CalibrationFile = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        help="A `zsad calibrate` file made with this same model: its image threshold labels the images (instead "
        "of --threshold), its pixel threshold draws the overlay contours, and every image gets a p-value. A file "
        "made for another model is refused.",
    ),
]


def _open_unit_interval(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise typer.BadParameter(f"{value} must lie strictly between 0 and 1 (e.g. 0.01)")
    return value


FalsePositiveRate = Annotated[
    float,
    typer.Option(
        callback=_open_unit_interval,
        help="Rate at which new normal images may be flagged: the image threshold keeps the expected false-positive "
        "rate at or below it (split conformal), the pixel threshold the expected fraction of a normal image's pixels "
        "inside the contour. Needs at least ceil(1/rate - 1) normal images (99 for 0.01).",
    ),
]


def load_for_model(path: Path, identity: dict, class_words: str | None):
    """The calibration file at ``path`` checked against the model ``identity``; with
    ``class_words`` (predict, serve, export) its entry for those prompt words, else the
    whole file (test picks an entry per class)."""
    from ..calibration import load_calibration

    calibration = load_calibration(path)
    calibration.check_fits(identity, path)
    return calibration if class_words is None else calibration.for_words(class_words, path)


def predictor_identity(predictor) -> dict:
    """The scoring identity of a torch predictor (see :func:`zsad.engine.calibrating.scoring_identity`)."""
    from ..engine.calibrating import scoring_identity

    return scoring_identity(predictor)


def calibration_meta(path: Path, entry) -> dict:
    """What output files record about the calibration used."""
    return {
        "calibration": str(path), "false_positive_rate": entry.false_positive_rate,
        "image_threshold": entry.image_threshold, "pixel_threshold": entry.pixel_threshold,
        "calibration_images": entry.n_images,
    }


def for_run(path: Path | None, threshold: float | None, predictor, meta: dict, onnx_meta: dict | None = None, reference=None):
    """predict / serve: -> (the calibration entry or None, the image threshold). With a
    file, its entry for this model and prompt words (``onnx_meta``: the identity an
    exported file records), recorded into ``meta``; without, ``threshold`` (default 0.5)."""
    if path is None:
        return None, 0.5 if threshold is None else threshold
    if threshold is not None:
        raise InvalidInputError("--threshold and --calibration both set the threshold: give one of them")
    if reference is not None:
        raise InvalidInputError("--reference changes the scores that --calibration was made for: use one of them")
    if onnx_meta is not None:
        identity, words = onnx_meta.get("scoring_identity"), onnx_meta["class_words"]
        if identity is None:
            raise InvalidInputError("this ONNX file records no model identity to check a calibration against: export it again")
    else:
        identity, words = predictor_identity(predictor), predictor.class_names.resolve(None)
    entry = load_for_model(path, identity, words)
    meta.update(calibration_meta(path, entry))
    return entry, entry.image_threshold


def calibrate(
    out: Annotated[Path, typer.Option("--out", "-o", help="The calibration JSON file to write.")],
    model: opt.ModelOptions,
    normal_images: Annotated[
        list[Path] | None,
        typer.Argument(metavar="NORMAL_DIR...", help="Folders and/or files of NORMAL images only (searched recursively); or use --data."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="KIND:PATH of a data set whose normal images (see --split) calibrate each of its categories "
            "(one entry per category). Kinds: {data_kinds}.",
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            callback=checks.one_of(*CALIBRATION_SPLITS),
            help="Which normal images of --data calibrate: `auto` (default) takes the held-out normal images "
            "(validation/good) where the layout has them (MVTec AD 2, MVTec LOCO: the intended calibration set, never "
            "trained on), else the training ones (train/good); `train` or `validation` forces one. The file records "
            "the split used.",
        ),
    ] = "auto",
    classes: opt.Classes = None,
    false_positive_rate: FalsePositiveRate = 0.01,
    batch_size: opt.BatchSize = 8,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Set the image and pixel thresholds from normal images only, for a chosen
    false-positive rate, and write them with the model's identity to --out. Use the
    file with `zsad predict|test|serve|export --calibration FILE` and the same model
    options. Unreadable files are reported and left out (exit status 2)."""
    from ..calibration import min_normal_images, require_normal_images
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..discovery import find_images
    from ..engine.calibrating import calibrate as run_calibration
    from ..engine.calibrating import calibration_split

    if bool(normal_images) == (data is not None):
        raise InvalidInputError("give normal image folders (NORMAL_DIR...) or --data KIND:PATH, one of the two")
    if classes and data is None:
        raise InvalidInputError("--classes selects categories of --data; it does not apply to image folders")
    if split != "auto" and data is None:
        raise InvalidInputError("--split selects the normal images of --data; it does not apply to image folders")
    if out.exists() and not overwrite:
        raise InvalidInputError(f"{out} exists; pass --overwrite to replace it")
    if data is not None:
        check_data_spec(data)  # before the model loads
    paths = None
    if normal_images:
        found = find_images(normal_images, IMAGE_SUFFIXES, exclude=[out])
        paths = found.paths
        if not paths:
            raise InvalidInputError(f"no image files found in {', '.join(map(str, normal_images))}")
        require_normal_images(len(paths), false_positive_rate, "found")  # before the model loads
    if data is not None:
        split = calibration_split(data, split)  # before the model loads
        console.print(f"calibrating on the normal images of the {split} split of {data}", highlight=False)
    needed = min_normal_images(false_positive_rate)
    console.print(f"false-positive rate {false_positive_rate}: needs at least {needed} normal images per category", highlight=False)
    predictor = load_predictor(model)
    calibration, errors = run_calibration(
        predictor, false_positive_rate, paths=paths, data_spec=data, classes=classes.split(",") if classes else None,
        batch_size=batch_size, show_progress=not quiet, split=split,
    )
    calibration.save(out, overwrite=overwrite)
    for key, entry in calibration.classes.items():
        console.print(
            f"{key}: {entry.n_images} normal images; image threshold {entry.image_threshold:.6f} "
            f"(expected false-positive rate {entry.expected_false_positive_rate:.4f} <= {false_positive_rate}), "
            f"pixel threshold {entry.pixel_threshold:.6f}",
            highlight=False,
        )
    console.print(f"calibration written to {out}", highlight=False)
    for error in errors:
        err_console.print(f"[red]could not read[/] {error['path']}: {error['error']}", highlight=False)
    if errors:
        raise typer.Exit(EXIT_BAD_INPUT)
