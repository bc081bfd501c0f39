"""MVTec-AD and the sets that share its layout (BTAD, MPDD, DTD-Synthetic, RSDD, KSDD2).

Layout (per category folder ``CAT``; ``ROOT`` may also be one category folder)::

    CAT/test/{good|ok}/*            normal test images       (label 0)
    CAT/test/DEFECT/*               anomalous test images    (label 1)
    CAT/ground_truth/DEFECT/*       masks: NAME_mask.*, NAME.*, NAME_GT.* (any image extension)
    CAT/train/{good|ok}/*           normal training images   (label 0)
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import (
    LayoutSamples,
    category_dirs,
    find_mask,
    index_by_stem,
    list_images,
    list_subdirs,
    require_dir,
)

NORMAL_DIR_NAMES = ("good", "ok")
EXPECTED_LAYOUT = (
    "ROOT/CATEGORY/test/{good|ok,DEFECT}/*, ROOT/CATEGORY/ground_truth/DEFECT/NAME[_mask].*, "
    "optional ROOT/CATEGORY/train/{good|ok}/* (ROOT may itself be one CATEGORY folder)"
)


def read_mvtec_like(root: Path) -> LayoutSamples:
    """Read every category of an MVTec-like tree (see the module docstring)."""
    require_dir(root, EXPECTED_LAYOUT)
    categories = category_dirs(root, ("test",), "test/", EXPECTED_LAYOUT)
    test: list[Sample] = []
    train: list[Sample] = []
    any_ground_truth = False
    any_train = False
    for category in categories:
        ground_truth = category / "ground_truth"
        any_ground_truth |= ground_truth.is_dir()
        test.extend(_read_test_split(category, ground_truth if ground_truth.is_dir() else None))
        train_dir = category / "train"
        if train_dir.is_dir():
            any_train = True
            train.extend(_read_normal_dirs(train_dir, category.name))
    return LayoutSamples(test=test, train=train if any_train else None, has_masks=any_ground_truth)


def _read_test_split(category: Path, ground_truth: Path | None) -> list[Sample]:
    samples: list[Sample] = []
    for state_dir in list_subdirs(category / "test"):
        is_normal = state_dir.name in NORMAL_DIR_NAMES
        mask_index = {}
        if not is_normal and ground_truth is not None:
            mask_index = index_by_stem(ground_truth / state_dir.name)
        for image in list_images(state_dir):
            mask = None if is_normal else find_mask(mask_index, image.stem)
            samples.append(Sample(image, 0 if is_normal else 1, mask, category.name))
    return samples


def _read_normal_dirs(split_dir: Path, class_name: str) -> list[Sample]:
    return [
        Sample(image, 0, None, class_name)
        for name in NORMAL_DIR_NAMES
        for image in list_images(split_dir / name)
    ]
