"""BMAD (Benchmarks for Medical Anomaly Detection): its pixel-level sets Brain MRI, Liver CT and Retina OCT.

BMAD reorganised BraTS2021 (brain MRI), BTCV + LiTS (liver CT) and RESC (retinal OCT) into one
layout, the one its Google-Drive archives unpack to (``Brain``/``BraTS2021_slice``, ``Liver``,
``RESC``)::

    ROOT/train/good/img/*               normal training images        (label 0)
    ROOT/valid/{good,Ungood}/...        validation split (not read: the papers test on test/)
    ROOT/test/good/img/*                normal test images            (label 0)
    ROOT/test/Ungood/img/*              anomalous test images         (label 1)
    ROOT/test/Ungood/label/*            masks, named like their image

MoECLIP's Tab. 1 rows "Brain MRI", "Liver CT" and "Retina OCT" are these test splits (its
App. B: Liver CT 833 normal / 660 anomalous, Retina OCT 1,041 / 764). Each set is one class,
named after its kind without the ``bmad-`` prefix.
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    index_by_stem,
    list_images,
    require_dir,
)

NORMAL_DIR = "good"
ANOMALOUS_DIR = "Ungood"
EXPECTED_LAYOUT = (
    "ROOT/test/good/img/*, ROOT/test/Ungood/img/* with masks ROOT/test/Ungood/label/* of the same name, "
    "optional ROOT/train/good/img/* (BMAD's pixel-level layout)"
)


def read_bmad_brainmri(root: Path) -> LayoutSamples:
    """BMAD Brain MRI (BraTS2021 slices): the ``bmad-brainmri`` kind, class ``brainmri``."""
    return read_bmad(root, "brainmri")


def read_bmad_liverct(root: Path) -> LayoutSamples:
    """BMAD Liver CT (BTCV normal + LiTS tumour slices): the ``bmad-liverct`` kind, class ``liverct``."""
    return read_bmad(root, "liverct")


def read_bmad_retinaoct(root: Path) -> LayoutSamples:
    """BMAD Retina OCT (RESC B-scans): the ``bmad-retinaoct`` kind, class ``retinaoct``."""
    return read_bmad(root, "retinaoct")


def read_bmad(root: Path, class_name: str) -> LayoutSamples:
    """Read one BMAD pixel-level set (see the module docstring); ``valid/`` is skipped."""
    require_dir(root, EXPECTED_LAYOUT)
    test_dir = root / "test"
    if not (test_dir / NORMAL_DIR / "img").is_dir() and not (test_dir / ANOMALOUS_DIR / "img").is_dir():
        raise DataLayoutError(
            f"{root}: neither test/good/img nor test/Ungood/img exists; expected layout: {EXPECTED_LAYOUT}"
        )
    label_dir = test_dir / ANOMALOUS_DIR / "label"
    masks = index_by_stem(label_dir)
    test = [Sample(p, 0, None, class_name) for p in list_images(test_dir / NORMAL_DIR / "img")]
    test += [Sample(p, 1, masks.get(p.stem), class_name) for p in list_images(test_dir / ANOMALOUS_DIR / "img")]
    train_dir = root / "train" / NORMAL_DIR / "img"
    train = [Sample(p, 0, None, class_name) for p in list_images(train_dir)] if train_dir.is_dir() else None
    return LayoutSamples(test=test, train=train, has_masks=True)
