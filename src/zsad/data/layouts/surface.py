"""Industrial surface sets: KolektorSDD ("KSDD", PromptMoE's "SDD") and DAGM 2007.

Layouts of the public releases:

* KolektorSDD: ``ROOT/kosNN/PartK.jpg`` with ``ROOT/kosNN/PartK_label.bmp`` for every image;
  an image is anomalous when its label mask has a foreground pixel (the normal ones have
  all-black masks). One class, ``ksdd``; no train split.
* DAGM 2007 (development set): ``ROOT/ClassN/{Train,Test}/NNNN.PNG`` with
  ``ROOT/ClassN/{Train,Test}/Label/NNNN_label.PNG`` for the defective images only; an image is
  anomalous when its label file exists. Classes ``Class1`` .. ``Class10``; the test split is
  ``Test/``, the train split the normal images of ``Train/``.

PromptMoE's counts (KSDD 181 normal / 74 anomalous) are those of AdaCLIP's reorganisation,
which cuts every KolektorSDD image into thirds and keeps a random quarter of the normal ones;
that tree, like AdaCLIP's DAGM tree, is MVTec-like and read too (see :mod:`.prepared`).
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
    list_subdirs,
    require_dir,
)
from .prepared import is_mvtec_like, read_prepared

KSDD_CLASS = "ksdd"
KSDD_LABEL_SUFFIX = "_label"
DAGM_SPLIT_DIRS = {"test": "Test", "train": "Train"}
DAGM_LABEL_DIR = "Label"
KSDD_LAYOUT = (
    "ROOT/kosNN/PartK.jpg with ROOT/kosNN/PartK_label.bmp (KolektorSDD), or AdaCLIP's MVTec-like "
    "ROOT[/SDD]/test/{good,defect}/* with ROOT[/SDD]/ground_truth/defect/*"
)
DAGM_LAYOUT = (
    "ROOT/ClassN/Test/NNNN.PNG with ROOT/ClassN/Test/Label/NNNN_label.PNG for defective images, optional "
    "ROOT/ClassN/Train/ (DAGM 2007), or AdaCLIP's MVTec-like ROOT/ClassN/test/{good,defect}/*"
)


def read_ksdd(root: Path) -> LayoutSamples:
    """KolektorSDD: labels from the masks' content (see the module docstring)."""
    require_dir(root, KSDD_LAYOUT)
    parts = [d for d in list_subdirs(root) if any(p.stem.endswith(KSDD_LABEL_SUFFIX) for p in list_images(d))]
    if not parts:
        if is_mvtec_like(root):
            return read_prepared(root, KSDD_CLASS)
        raise DataLayoutError(f"{root}: no kosNN folder with PartK_label masks; expected layout: {KSDD_LAYOUT}")
    samples: list[Sample] = []
    for part in parts:
        files = list_images(part)
        masks = {p.stem: p for p in files if p.stem.endswith(KSDD_LABEL_SUFFIX)}
        for image in (p for p in files if p.stem not in masks):
            mask = masks.get(image.stem + KSDD_LABEL_SUFFIX)
            if mask is None:
                raise DataLayoutError(f"{image}: no {image.stem}{KSDD_LABEL_SUFFIX}.* mask beside it; every "
                                      f"KolektorSDD image has one (all black when normal)")
            anomalous = _has_foreground(mask)
            samples.append(Sample(image, int(anomalous), mask if anomalous else None, KSDD_CLASS))
    return LayoutSamples(test=samples, train=None, has_masks=True)


def read_dagm(root: Path) -> LayoutSamples:
    """DAGM 2007: labels from the presence of a label mask (see the module docstring)."""
    require_dir(root, DAGM_LAYOUT)
    if is_mvtec_like(root) and any((d / "test" / "good").is_dir() for d in [root, *list_subdirs(root)]):
        return read_prepared(root, None)  # checked first: "test" and "Test" are one folder on some file systems
    classes = [d for d in list_subdirs(root) if _split_dir(d, "test") is not None]
    if not classes:
        raise DataLayoutError(f"{root}: no ClassN/Test folder; expected layout: {DAGM_LAYOUT}")
    test: list[Sample] = []
    train: list[Sample] = []
    for class_dir in classes:
        test += _read_dagm_split(_split_dir(class_dir, "test"), class_dir.name)
        train_dir = _split_dir(class_dir, "train")
        if train_dir is not None:
            train += [s for s in _read_dagm_split(train_dir, class_dir.name) if s.label == 0]
    return LayoutSamples(test=test, train=train or None, has_masks=True)


def _split_dir(class_dir: Path, split: str) -> Path | None:
    path = class_dir / DAGM_SPLIT_DIRS[split]
    return path if path.is_dir() else None


def _read_dagm_split(split_dir: Path, class_name: str) -> list[Sample]:
    masks = index_by_stem(split_dir / DAGM_LABEL_DIR)
    samples = []
    for image in list_images(split_dir):
        mask = find_mask(masks, image.stem)
        samples.append(Sample(image, 0 if mask is None else 1, mask, class_name))
    return samples


def _has_foreground(mask: Path) -> bool:
    # Imported here: the layout table is read without numpy (the command line checks specs at once).
    from ...imageio import ImageReadError, read_mask

    try:
        return bool(read_mask(mask, None).any())
    except ImageReadError as error:
        raise DataLayoutError(f"{mask}: cannot read the label mask ({error})") from error
