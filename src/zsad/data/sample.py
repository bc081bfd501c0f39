"""One entry of a data set: where the image and its mask live, and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The splits a data set can be read as ("validation": normal held-out images, where the
# layout has them, e.g. MVTec AD 2 and MVTec LOCO).
SPLITS = ("test", "train", "validation", "all")


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        image_path: the image file.
        label: 1 anomalous, 0 normal, None unknown.
        mask_path: the ground-truth mask file, or a folder of mask files whose union is the
            mask (MVTec LOCO: one PNG per defect region), or None when there is no mask.
            In a set that has masks, a normal image has no file and an all-zero mask.
        class_name: category key as in the data set ("metal_nut", "pcb1", "01", "kvasir", ...).
        defect_type: the defect's name in the data set ("crack", "AK", "missing_banana"),
            None for normal images and where the set does not name defects.
        anomaly_type: the family of anomalies evaluated apart (MVTec LOCO: "logical",
            "structural"); None for normal images and in sets that do not split them.
        group: the physical sample an image is one view of (Real-IAD: 5 cameras per
            sample); the views of one sample share it. None: the image is its own sample.
    """

    image_path: Path
    label: int | None
    mask_path: Path | None
    class_name: str
    defect_type: str | None = None
    anomaly_type: str | None = None
    group: str | None = None
