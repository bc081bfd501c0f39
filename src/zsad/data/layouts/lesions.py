"""Medical sets with pixel labels only: CVC-ColonDB, CVC-300, Endo (EndoTect 2020) and ISIC 2016.

Every image shows a lesion (label 1) and has a mask; there are no normal images, so only
pixel metrics are defined (the papers' Tab. 1 reports pixel metrics alone for them). Layouts
of the public releases:

* CVC-ColonDB (380 images) and CVC-300 (60, the EndoScene test set): PraNet's
  ``TestDataset/CVC-ColonDB`` and ``TestDataset/CVC-300``: ``ROOT/images/*.png`` with
  ``ROOT/masks/*.png`` of the same name.
* Endo (200 images, ``EndoTect_2020_Segmentation_Test_Dataset``): ``ROOT/images/*`` with
  ``ROOT/masks/*`` of the same name (masks may be PNG beside JPEG images). AnomalyCLIP pairs
  its files by sorted order; zsad pairs by name and names every image left without a mask.
* ISIC (379 images, ISIC 2016 Part 1 test set): ``ROOT/ISBI2016_ISIC_Part1_Test_Data/ISIC_N.jpg``
  with ``ROOT/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_N_Segmentation.png``; ``images/`` +
  ``masks/`` is accepted too.

Each also reads AdaCLIP's MVTec-like reorganisation (see :mod:`.prepared`). Each set is one
class named after its kind.
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
from .prepared import is_mvtec_like, read_prepared

IMAGES_MASKS = (("images", "masks"),)
ISIC_FOLDERS = (("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"), *IMAGES_MASKS)
# ISIC 2017 put superpixel maps beside the images; they are not images of the set.
SKIPPED_STEM_ENDINGS = ("_superpixels",)
PREPARED_LAYOUT = "or AdaCLIP's MVTec-like ROOT[/CLASS]/test/DEFECT/* with ROOT[/CLASS]/ground_truth/DEFECT/*"
POLYP_LAYOUT = f"ROOT/images/* with ROOT/masks/* of the same name (PraNet's TestDataset layout), {PREPARED_LAYOUT}"
ISIC_LAYOUT = (
    "ROOT/ISBI2016_ISIC_Part1_Test_Data/ISIC_N.jpg with ROOT/ISBI2016_ISIC_Part1_Test_GroundTruth/"
    f"ISIC_N_Segmentation.png (or ROOT/images + ROOT/masks), {PREPARED_LAYOUT}"
)


def read_colondb(root: Path) -> LayoutSamples:
    """CVC-ColonDB: 380 polyp frames with masks."""
    return read_lesion_set(root, IMAGES_MASKS, "colondb", POLYP_LAYOUT)


def read_cvc300(root: Path) -> LayoutSamples:
    """CVC-300 (EndoScene test): 60 polyp frames with masks."""
    return read_lesion_set(root, IMAGES_MASKS, "cvc300", POLYP_LAYOUT)


def read_endo(root: Path) -> LayoutSamples:
    """Endo (EndoTect 2020 segmentation test): 200 polyp images with masks."""
    return read_lesion_set(root, IMAGES_MASKS, "endo", POLYP_LAYOUT)


def read_isic(root: Path) -> LayoutSamples:
    """ISIC 2016 Part 1 test: 379 skin-lesion images with ``_Segmentation`` masks."""
    return read_lesion_set(root, ISIC_FOLDERS, "isic", ISIC_LAYOUT)


def read_lesion_set(
    root: Path, folder_pairs: tuple[tuple[str, str], ...], class_name: str, layout: str
) -> LayoutSamples:
    """Every image is anomalous; masks are matched by stem (``STEM``, ``STEM_mask``, ``STEM_Segmentation``, ...).

    ``folder_pairs``: the (images, masks) folder names to try, in order; the first whose image
    folder exists is read. Without any, an MVTec-like tree is read instead.
    """
    require_dir(root, layout)
    pair = next(((root / images, root / masks) for images, masks in folder_pairs if (root / images).is_dir()), None)
    if pair is None:
        if is_mvtec_like(root):
            return read_prepared(root, class_name)
        raise DataLayoutError(f"{root}: no image folder found; expected layout: {layout}")
    image_dir, mask_dir = pair
    if not mask_dir.is_dir():
        raise DataLayoutError(f"{root}: mask folder {mask_dir.name!r} not found; expected layout: {layout}")
    masks = index_by_stem(mask_dir)
    images = [p for p in list_images(image_dir) if not p.stem.endswith(SKIPPED_STEM_ENDINGS)]
    samples = [Sample(image, 1, find_mask(masks, image.stem), class_name) for image in images]
    return LayoutSamples(test=samples, train=None, has_masks=True)
