"""MVTec AD 2 (public release): eight categories, held-out normals, a public and two private test sets.

Layout (per category folder ``CAT``; ``ROOT`` may also be one category folder)::

    CAT/train/good/*.png                          normal training images      (split "train")
    CAT/validation/good/*.png                     normal held-out images      (split "validation")
    CAT/test_public/good/*.png                    normal test images          (split "test", label 0)
    CAT/test_public/bad/*.png                     anomalous test images       (split "test", label 1)
    CAT/test_public/ground_truth/bad/NAME_mask.png
    CAT/test_private/*.png                        no labels: predict only     (split "test_private")
    CAT/test_private_mixed/*.png                  no labels: predict only     (split "test_private_mixed")

The private test sets' ground truth stays on MVTec's evaluation server: they can be
listed (``zsad data info mvtec-ad2:ROOT --split test_private``) and scored (``zsad
predict ROOT/CAT/test_private``), never evaluated.
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    category_dirs,
    find_mask,
    index_by_stem,
    list_images,
    list_subdirs,
    require_dir,
)

PUBLIC_TEST = "test_public"
PREDICT_ONLY_SPLITS = ("test_private", "test_private_mixed")
SPLIT_DIRS = ("train", "validation", PUBLIC_TEST, *PREDICT_ONLY_SPLITS)
TEST_PUBLIC_DIRS = frozenset({"good", "bad", "ground_truth"})
EXPECTED_LAYOUT = (
    "ROOT/CATEGORY/train/good/*, ROOT/CATEGORY/validation/good/*, ROOT/CATEGORY/test_public/{good,bad}/*, "
    "ROOT/CATEGORY/test_public/ground_truth/bad/NAME_mask.png, unlabelled ROOT/CATEGORY/test_private/* and "
    "test_private_mixed/* (ROOT may itself be one CATEGORY folder)"
)


def read_mvtec_ad2(root: Path) -> LayoutSamples:
    """Read every category of an MVTec AD 2 tree (see the module docstring)."""
    require_dir(root, EXPECTED_LAYOUT)
    categories = category_dirs(root, SPLIT_DIRS, ", ".join(SPLIT_DIRS), EXPECTED_LAYOUT)
    test: list[Sample] = []
    train: list[Sample] = []
    validation: list[Sample] = []
    predict_only: dict[str, list[Sample]] = {}
    for category in categories:
        name = category.name
        train += [Sample(p, 0, None, name) for p in list_images(category / "train" / "good")]
        validation += [Sample(p, 0, None, name) for p in list_images(category / "validation" / "good")]
        if (category / PUBLIC_TEST).is_dir():
            test += _read_test_public(category / PUBLIC_TEST, name)
        for split in PREDICT_ONLY_SPLITS:
            unlabelled = [Sample(p, None, None, name) for p in list_images(category / split)]
            if unlabelled:
                predict_only.setdefault(split, []).extend(unlabelled)
    return LayoutSamples(
        test=test,
        train=train if any((c / "train").is_dir() for c in categories) else None,
        has_masks=any((c / PUBLIC_TEST / "ground_truth").is_dir() for c in categories),
        validation=validation if any((c / "validation").is_dir() for c in categories) else None,
        predict_only=predict_only,
    )


def _read_test_public(test_dir: Path, class_name: str) -> list[Sample]:
    unexpected = [d.name for d in list_subdirs(test_dir) if d.name not in TEST_PUBLIC_DIRS]
    if unexpected:
        raise DataLayoutError(
            f"{test_dir}: unexpected folders {unexpected}; test_public holds good/, bad/ and ground_truth/bad/"
        )
    masks = index_by_stem(test_dir / "ground_truth" / "bad")
    samples = [Sample(p, 0, None, class_name) for p in list_images(test_dir / "good")]
    samples += [Sample(p, 1, find_mask(masks, p.stem), class_name, defect_type="bad") for p in list_images(test_dir / "bad")]
    return samples
