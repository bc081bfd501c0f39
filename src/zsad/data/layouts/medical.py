"""Medical sets: Kvasir-SEG, CVC-ClinicDB (pixel labels only), HeadCT, BrainMRI/Br35H (image labels only).

Each is a single class named after its kind ("kvasir", "clinicdb", "headct", "brainmri", "br35h").
None of them has a train split.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    index_by_stem,
    list_images,
    require_dir,
)

KVASIR_LAYOUT = "ROOT/images/*.jpg with ROOT/masks/*.jpg of the same name (every image is anomalous)"
CLINICDB_LAYOUT = "ROOT/Original/N.tif with ROOT/Ground Truth/N.tif (.png also accepted; every image is anomalous)"
HEADCT_LAYOUT = (
    "ROOT/head_ct/NNN.png with ROOT/labels.csv (header 'id, hemorrhage'; id N -> file N zero-padded to 3 digits)"
)
YES_NO_LAYOUT = "ROOT/yes/* (label 1) and ROOT/no/* (label 0)"


def read_kvasir(root: Path) -> LayoutSamples:
    """Kvasir-SEG: all polyp images (label 1) with masks matched by file stem."""
    return _read_images_with_masks(root, "images", ("masks",), "kvasir", KVASIR_LAYOUT)


def read_clinicdb(root: Path) -> LayoutSamples:
    """CVC-ClinicDB: all polyp frames (label 1) with masks matched by file stem."""
    mask_dirs = ("Ground Truth", "GroundTruth")
    return _read_images_with_masks(root, "Original", mask_dirs, "clinicdb", CLINICDB_LAYOUT)


def read_headct(root: Path) -> LayoutSamples:
    """HeadCT: image labels from ``labels.csv`` (``id, hemorrhage``), no masks."""
    require_dir(root, HEADCT_LAYOUT)
    image_dir = require_dir(root / "head_ct", HEADCT_LAYOUT)
    if (image_dir / "head_ct").is_dir():  # the Kaggle archive nests the folder once more
        image_dir = image_dir / "head_ct"
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise DataLayoutError(f"{labels_csv}: file not found; expected layout: {HEADCT_LAYOUT}")
    images = index_by_stem(image_dir)
    samples: list[Sample] = []
    for line_number, image_id, label in _read_headct_labels(labels_csv):
        image = images.get(f"{image_id:03d}") or images.get(str(image_id))
        if image is None:
            raise DataLayoutError(f"{labels_csv}:{line_number}: no image for id {image_id} in {image_dir}")
        samples.append(Sample(image, label, None, "headct"))
    return LayoutSamples(test=samples, train=None, has_masks=False)


def read_brainmri(root: Path) -> LayoutSamples:
    """BrainMRI (Kaggle): ``yes/`` tumour (label 1) and ``no/`` normal (label 0), no masks."""
    return _read_yes_no(root, "brainmri")


def read_br35h(root: Path) -> LayoutSamples:
    """Br35H: ``yes/`` tumour (label 1) and ``no/`` normal (label 0); ``pred/`` is unlabelled and ignored."""
    return _read_yes_no(root, "br35h")


def _read_images_with_masks(
    root: Path, image_dir_name: str, mask_dir_names: tuple[str, ...], class_name: str, layout: str
) -> LayoutSamples:
    require_dir(root, layout)
    if not (root / image_dir_name).is_dir():
        nested = sorted(child for child in root.iterdir() if (child / image_dir_name).is_dir()) if root.is_dir() else []
        if nested:  # e.g. the CVC-ClinicDB download: ROOT/TIF/Original and ROOT/PNG/Original
            example = next((child for child in nested if child.name.upper() == "TIF"), nested[0])  # the original frames
            raise DataLayoutError(
                f"{root} holds no {image_dir_name}/ folder, but {' and '.join(str(child) for child in nested)} do: "
                f"point the data spec at the folder holding {image_dir_name}/ (e.g. {class_name}:{example}); "
                f"expected layout: {layout}"
            )
    image_dir = require_dir(root / image_dir_name, layout)
    mask_dir = next((root / name for name in mask_dir_names if (root / name).is_dir()), None)
    if mask_dir is None:
        raise DataLayoutError(f"{root}: no mask folder ({' or '.join(mask_dir_names)}); expected layout: {layout}")
    masks = index_by_stem(mask_dir)
    samples = [Sample(image, 1, masks.get(image.stem), class_name) for image in list_images(image_dir)]
    return LayoutSamples(test=samples, train=None, has_masks=True)


def _read_headct_labels(labels_csv: Path) -> list[tuple[int, int, int]]:
    """``(line_number, id, label)`` rows; the header's names are stripped (``id, hemorrhage``)."""
    rows: list[tuple[int, int, int]] = []
    with labels_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        if header[:2] != ["id", "hemorrhage"]:
            raise DataLayoutError(f"{labels_csv}: header {header} is not 'id, hemorrhage'")
        for line_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                image_id, label = int(row[0]), int(row[1])
            except (ValueError, IndexError) as error:
                raise DataLayoutError(f"{labels_csv}:{line_number}: cannot parse {row}: {error}") from error
            if label not in (0, 1):
                raise DataLayoutError(f"{labels_csv}:{line_number}: hemorrhage must be 0 or 1, got {label}")
            rows.append((line_number, image_id, label))
    return rows


def _read_yes_no(root: Path, class_name: str) -> LayoutSamples:
    require_dir(root, YES_NO_LAYOUT)
    if not (root / "yes").is_dir() and not (root / "no").is_dir():
        raise DataLayoutError(f"{root}: neither yes/ nor no/ exists; expected layout: {YES_NO_LAYOUT}")
    samples = [Sample(p, 1, None, class_name) for p in list_images(root / "yes")]
    samples += [Sample(p, 0, None, class_name) for p in list_images(root / "no")]
    return LayoutSamples(test=samples, train=None, has_masks=False)
