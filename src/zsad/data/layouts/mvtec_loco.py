"""MVTec LOCO AD: logical and structural anomalies, masks as one folder of PNGs per image.

Layout (per category folder ``CAT``; ``ROOT`` may also be one category folder)::

    CAT/train/good/*.png                                      (split "train")
    CAT/validation/good/*.png                                 (split "validation")
    CAT/test/good/NNN.png                                     normal test images (label 0)
    CAT/test/{logical,structural}_anomalies/NNN.png           anomalous test images (label 1)
    CAT/ground_truth/{logical,structural}_anomalies/NNN/*.png one mask per defect region; merged

An anomalous image's mask is the union of the files in its ground-truth folder. Each
anomalous image carries its anomaly type ("logical" or "structural"), which `zsad test`
reports apart (each type against all normal images, as the data set's authors evaluate).
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    category_dirs,
    list_images,
    list_subdirs,
    require_dir,
)

ANOMALY_DIRS = {"logical_anomalies": "logical", "structural_anomalies": "structural"}
EXPECTED_LAYOUT = (
    "ROOT/CATEGORY/test/{good,logical_anomalies,structural_anomalies}/*.png, "
    "ROOT/CATEGORY/ground_truth/{logical,structural}_anomalies/NNN/*.png (one folder per image), "
    "optional ROOT/CATEGORY/train/good/*, ROOT/CATEGORY/validation/good/* (ROOT may itself be one CATEGORY folder)"
)


def read_mvtec_loco(root: Path) -> LayoutSamples:
    """Read every category of an MVTec LOCO tree (see the module docstring)."""
    require_dir(root, EXPECTED_LAYOUT)
    categories = category_dirs(root, ("test",), "test/", EXPECTED_LAYOUT)
    test: list[Sample] = []
    train: list[Sample] = []
    validation: list[Sample] = []
    for category in categories:
        test += _read_test(category)
        train += [Sample(p, 0, None, category.name) for p in list_images(category / "train" / "good")]
        validation += [Sample(p, 0, None, category.name) for p in list_images(category / "validation" / "good")]
    return LayoutSamples(
        test=test,
        train=train if any((c / "train").is_dir() for c in categories) else None,
        has_masks=any((c / "ground_truth").is_dir() for c in categories),
        validation=validation if any((c / "validation").is_dir() for c in categories) else None,
    )


def _read_test(category: Path) -> list[Sample]:
    test_dir = category / "test"
    unexpected = [d.name for d in list_subdirs(test_dir) if d.name != "good" and d.name not in ANOMALY_DIRS]
    if unexpected:
        raise DataLayoutError(
            f"{test_dir}: unexpected folders {unexpected}; MVTec LOCO's test/ holds good/, "
            f"{', '.join(ANOMALY_DIRS)}"
        )
    samples = [Sample(p, 0, None, category.name) for p in list_images(test_dir / "good")]
    for folder, anomaly_type in ANOMALY_DIRS.items():
        for image in list_images(test_dir / folder):
            mask_dir = category / "ground_truth" / folder / image.stem
            mask = mask_dir if list_images(mask_dir) else None  # no file: reported by the mask check
            samples.append(Sample(image, 1, mask, category.name, defect_type=folder, anomaly_type=anomaly_type))
    return samples
