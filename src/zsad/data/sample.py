"""One entry of a data set: where the image and its mask live, and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The splits a data set can be read as.
SPLITS = ("test", "train", "all")


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        image_path: the image file.
        label: 1 anomalous, 0 normal, None unknown.
        mask_path: the ground-truth mask file, or None when there is no mask file.
            In a set that has masks, a normal image has no file and an all-zero mask.
        class_name: category key as in the data set ("metal_nut", "pcb1", "01", "kvasir", ...).
    """

    image_path: Path
    label: int | None
    mask_path: Path | None
    class_name: str
