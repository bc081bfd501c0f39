"""Ground-truth masks of a sample: one file, or a folder of files merged into one mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..imageio import ImageReadError, read_mask
from .layouts.common import list_images


def read_sample_mask(mask_path: Path, expected_size: tuple[int, int], image_path: Path) -> np.ndarray:
    """The ``(H, W)`` bool mask of one image.

    mask_path: a mask file, or a folder of mask files (MVTec LOCO keeps one PNG per
    defect region of an image); a pixel of a folder's mask is anomalous when it is
    anomalous in any of its files. Every file must have the image's ``(W, H)``
    (``expected_size``). Raises ImageReadError for an unreadable file or an empty
    folder, MaskSizeError for a file of another size.
    """
    if not mask_path.is_dir():
        return read_mask(mask_path, expected_size, image_path)
    parts = list_images(mask_path)
    if not parts:
        raise ImageReadError(mask_path, "mask folder holds no mask image")
    width, height = expected_size
    union = np.zeros((height, width), dtype=bool)
    for part in parts:
        union |= read_mask(part, expected_size, image_path)
    return union
