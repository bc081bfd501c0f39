"""A plain folder of normal and abnormal images (the idea of anomalib's ``Folder``).

Layout::

    ROOT/normal/*   (or ROOT/good/*)       label 0
    ROOT/abnormal/* (or ROOT/anomaly/*)    label 1
    ROOT/masks/*    optional; a mask is named like its abnormal image (NAME.*, NAME_mask.*)

The class is named after ROOT's folder name; there is no train split.
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    find_mask,
    index_by_stem,
    list_images,
    require_dir,
)

NORMAL_DIR_NAMES = ("normal", "good")
ABNORMAL_DIR_NAMES = ("abnormal", "anomaly")
MASK_DIR_NAME = "masks"
EXPECTED_LAYOUT = "ROOT/normal/* (or good/), ROOT/abnormal/* (or anomaly/), optional ROOT/masks/NAME[_mask].*"


def read_folder(root: Path) -> LayoutSamples:
    """Read a normal/abnormal(/masks) folder (see the module docstring)."""
    require_dir(root, EXPECTED_LAYOUT)
    normal_dir = _first_existing(root, NORMAL_DIR_NAMES)
    abnormal_dir = _first_existing(root, ABNORMAL_DIR_NAMES)
    if normal_dir is None and abnormal_dir is None:
        raise DataLayoutError(f"{root}: no normal/ or abnormal/ folder; expected layout: {EXPECTED_LAYOUT}")
    mask_dir = root / MASK_DIR_NAME
    has_masks = mask_dir.is_dir()
    mask_index = index_by_stem(mask_dir) if has_masks else {}
    class_name = root.resolve().name
    samples: list[Sample] = []
    if normal_dir is not None:
        samples += [Sample(p, 0, None, class_name) for p in list_images(normal_dir)]
    if abnormal_dir is not None:
        samples += [Sample(p, 1, find_mask(mask_index, p.stem), class_name) for p in list_images(abnormal_dir)]
    return LayoutSamples(test=samples, train=None, has_masks=has_masks)


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)
