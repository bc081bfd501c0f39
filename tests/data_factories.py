"""Generators of small fake data trees and awkward image files for the data/imageio tests.

Every function writes under a folder the caller owns (pytest's ``tmp_path``) and returns
what the tests need to check against.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

# A few real files of the medical sets in their real layouts, carried by the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The full sets, optional: present on the development machines beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def needs_full_set(folder: str):
    """Skip marker for a test that needs the whole of ``SHARED_DATA / folder``."""
    path = SHARED_DATA / folder
    return pytest.mark.skipif(
        not path.is_dir(), reason=f"needs the full data set at {path} (optional; tests/fixtures covers the format)"
    )


def square_image(size: tuple[int, int] = (32, 24), colour=(200, 60, 30)) -> np.ndarray:
    """``(H, W, 3)`` uint8: dark background with a coloured square in the middle; size is (W, H)."""
    width, height = size
    image = np.full((height, width, 3), 20, dtype=np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = colour
    return image


def square_mask(size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """``(H, W)`` uint8 0/255 mask of the square drawn by :func:`square_image`."""
    return (square_image(size)[:, :, 0] > 20).astype(np.uint8) * 255


def file_info(path: Path) -> tuple[str, tuple[int, int], str]:
    """``(mode, (W, H), format)`` of an image file as Pillow sees it (file closed afterwards)."""
    with Image.open(path) as image:
        return image.mode, image.size, image.format


def load_array(path: Path, mode: str | None = None) -> np.ndarray:
    """Pixels of an image file via Pillow (optionally converted to ``mode``), file closed afterwards."""
    with Image.open(path) as image:
        return np.asarray(image.convert(mode) if mode else image)


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


# --- awkward single files ---------------------------------------------------------------


def write_truncated(path: Path, fmt: str) -> Path:
    """A valid PNG/JPEG with its second half cut off."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format=fmt)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_text_file(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def write_16bit_png(path: Path, array: np.ndarray) -> Path:
    """Write a ``(H, W)`` uint16 array as a 16-bit greyscale PNG (Pillow mode I;16)."""
    Image.fromarray(array.astype(np.uint16)).save(path)
    return path


def write_palette_png(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]]) -> Path:
    """Write ``(H, W)`` palette indices with the given colours as a P-mode PNG."""
    height, width = indices.shape
    image = Image.frombytes("P", (width, height), indices.astype(np.uint8).tobytes())
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)
    return path


def write_exif_rotated_jpeg(path: Path) -> Path:
    """A 40x20 (WxH) JPEG, left half red, right half blue, tagged EXIF orientation 6.

    Displayed upright (rotated 90 degrees clockwise) it is 20x40 with red on top.
    """
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def write_rgb_tiff_16bit(path: Path, array: np.ndarray) -> Path:
    """Write ``(H, W, 3)`` uint16 as an RGB TIFF with tifffile."""
    tifffile.imwrite(path, array.astype(np.uint16), photometric="rgb")
    return path


# --- data-set trees ---------------------------------------------------------------------


def make_btad_tree(root: Path) -> dict[str, int]:
    """BTAD layout with BMP images and PNG masks (01) and PNG images with BMP masks (02).

    Returns counts: test normal, test anomalous, train images (over both categories).
    """
    for category, image_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".bmp")):
        for index in range(3):
            save(square_image(colour=(90, 90, 90)), root / category / "train" / "ok" / f"{index:04d}{image_ext}")
        for index in range(2):
            save(square_image(colour=(90, 90, 90)), root / category / "test" / "ok" / f"{index:04d}{image_ext}")
        for index in range(2):
            save(square_image(), root / category / "test" / "ko" / f"{index:04d}{image_ext}")
            save(square_mask(), root / category / "ground_truth" / "ko" / f"{index:04d}{mask_ext}")
    return {"normal": 4, "anomalous": 4, "train": 6}


def make_mvtec_like_tree(root: Path, mask_suffix: str = "") -> None:
    """One MVTec-like category "part" whose masks are named ``NAME{mask_suffix}.png``."""
    save(square_image(colour=(90, 90, 90)), root / "part" / "train" / "good" / "000.png")
    save(square_image(colour=(90, 90, 90)), root / "part" / "test" / "good" / "000.png")
    for index in range(2):
        save(square_image(), root / "part" / "test" / "dent" / f"{index:03d}.png")
        save(square_mask(), root / "part" / "ground_truth" / "dent" / f"{index:03d}{mask_suffix}.png")


def make_folder_tree(root: Path, normal: str = "normal", abnormal: str = "abnormal", masks: bool = True) -> None:
    """Folder layout: 3 normal, 2 abnormal images, and masks named NAME_mask.png if asked."""
    for index in range(3):
        save(square_image(colour=(90, 90, 90)), root / normal / f"n{index}.png")
    for index in range(2):
        save(square_image(), root / abnormal / f"a{index}.jpg", quality=95)
        if masks:
            save(square_mask(), root / "masks" / f"a{index}_mask.png")


def make_manifest(root: Path, records: list[dict], name: str = "list.jsonl") -> Path:
    """Write records as JSON lines; paths inside are taken as given."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path
