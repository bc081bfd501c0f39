"""`zsad calibrate`: score normal images exactly as `zsad predict` does and set the
thresholds of :mod:`zsad.calibration`; the identity that ties a calibration file to
the model that made it."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import (
    Calibration,
    ClassCalibration,
    PixelTail,
    calibrate_class,
    require_normal_images,
)
from ..data import available_splits, build_dataset
from ..errors import InvalidInputError
from ..imageio import ImageReadError, read_image_reduced
from ..settings import CALIBRATION_SPLITS
from .predictor import Predictor
from .runtime import image_counter
from .scorer import Scorer


def calibration_split(data_spec: str, split: str = "auto") -> str:
    """The split of ``data_spec`` whose normal images calibrate it: ``split`` itself
    ("train" / "validation"), or for "auto" "validation" when the tree has one (MVTec
    AD 2, MVTec LOCO: normal images held out of training, the intended calibration set),
    else "train". A split the tree lacks is refused, naming the ones it has."""
    if split not in CALIBRATION_SPLITS:
        raise InvalidInputError(f"calibration split {split!r}: choose one of {', '.join(CALIBRATION_SPLITS)}")
    present = available_splits(data_spec)
    chosen = split if split != "auto" else ("validation" if "validation" in present else "train")
    if chosen not in present:
        normal = [name for name in ("train", "validation") if name in present]
        raise InvalidInputError(
            f"{data_spec} has no {chosen} split to calibrate on; it has "
            f"{', '.join(normal) or 'no normal-image split'}"
            + (f": use --split {normal[0]} or --split auto" if normal else ": pass folders of normal images instead")
        )
    return chosen


def scoring_identity(predictor: Scorer) -> dict[str, Any]:
    """What decides a scorer's scores apart from the prompt words, the references and a
    calibration: :meth:`~zsad.engine.scorer.Scorer.model_identity` (method and its config,
    backbone and activation, domain, a digest of the method's own tensors, the precision).
    Compile mode and device are not part of it (the same numbers to float rounding)."""
    return predictor.model_identity()


def _score_normal_images(
    predictor: Predictor, paths: list[Path], alpha: float, class_key: str | None, batch_size: int, show_progress: bool,
    errors: list[dict[str, str]],
) -> ClassCalibration:
    """Score ``paths`` (reduced decode, as `zsad predict`) and calibrate one category;
    unreadable files are listed in ``errors`` and left out of n."""
    side = predictor.image_size
    scores: list[float] = []
    tail = PixelTail(len(paths), alpha, side * side)
    label = f"calibrate {class_key}" if class_key else "calibrate"
    counter = image_counter(len(paths), label, enabled=show_progress)
    try:
        for start in range(0, len(paths), batch_size):
            images = []
            for path in paths[start : start + batch_size]:
                try:
                    images.append(read_image_reduced(path, side)[0])
                except ImageReadError as error:
                    errors.append({"path": str(path), "error": error.reason})
            if images:
                batch_scores, maps = predictor.score_and_map(images, class_name=class_key)
                scores += batch_scores
                tail.add(maps)
            counter.update(len(paths[start : start + batch_size]))
    finally:
        counter.close()
    words = predictor.class_names.resolve(class_key)
    return calibrate_class(words, np.asarray(scores), tail, alpha)


def calibrate(
    predictor: Predictor,
    alpha: float,
    paths: list[Path] | None = None,
    data_spec: str | None = None,
    classes: list[str] | None = None,
    batch_size: int = 8,
    show_progress: bool = True,
    split: str = "auto",
) -> tuple[Calibration, list[dict[str, str]]]:
    """Calibrate ``predictor`` at false-positive rate ``alpha`` on normal images: the
    files ``paths`` (one entry, for the predictor's prompt words), or the normal images
    of ``data_spec``'s ``split`` (see :func:`calibration_split`; one entry per category,
    scored with that category's words), recorded in the calibration's ``split``.
    -> (calibration, unreadable files)."""
    if (paths is None) == (data_spec is None):
        raise ValueError("calibrate on image paths or on a data set, not both or neither")
    used_split = None
    if data_spec is not None:
        used_split = calibration_split(data_spec, split)
        dataset = build_dataset(data_spec, classes=classes, image_size=predictor.image_size, split=used_split)
        groups: dict[str | None, list[Path]] = defaultdict(list)
        for sample in dataset.samples:
            if sample.label == 0:
                groups[sample.class_name].append(Path(sample.image_path))
        source = data_spec
    else:
        groups = {None: list(paths)}
        source = ", ".join(sorted({str(Path(p).parent) for p in paths}))
    for key, group in groups.items():
        require_normal_images(len(group), alpha, f"found for {key}:" if key else "found")
    errors: list[dict[str, str]] = []
    entries = {}
    for key, group in sorted(groups.items(), key=lambda item: str(item[0])):
        entry = _score_normal_images(predictor, group, alpha, key, batch_size, show_progress, errors)
        entries[key if key is not None else entry.class_words] = entry
    calibration = Calibration(identity=scoring_identity(predictor), classes=entries, source=source, split=used_split)
    return calibration, errors
