"""Helpers shared by the layout readers: listing images, matching masks, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ZsadError
from ..sample import Sample

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
# Mask file names seen in MVTec-like sets: "000_mask.png", "000.png", "000_GT.png"; DAGM and
# KolektorSDD name theirs "0001_label.PNG" / "Part0_label.bmp", ISIC "ISIC_0000003_Segmentation.png".
MASK_STEM_SUFFIXES = ("_mask", "", "_GT", "_gt", "_label", "_Segmentation")


class DataLayoutError(ZsadError, ValueError):
    """A data folder does not have the layout its kind expects (or is empty)."""


@dataclass(frozen=True)
class LayoutSamples:
    """What a layout reader found under a root.

    Attributes:
        test: the labelled test split.
        train: the normal training images, or None when the layout has no train split.
        has_masks: the set provides pixel labels (normal images get all-zero masks).
        validation: held-out normal images, or None when the layout has none.
        predict_only: unlabelled splits by name (MVTec AD 2's ``test_private``): they
            can be listed and scored, never evaluated.
    """

    test: list[Sample]
    train: list[Sample] | None
    has_masks: bool
    validation: list[Sample] | None = None
    predict_only: dict[str, list[Sample]] = field(default_factory=dict)


def natural_key(path: Path) -> tuple:
    """Sort key that orders "2.png" before "10.png" (case-insensitive)."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts)


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory`` (hidden files skipped), in natural order."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if is_image_file(p)), key=natural_key)


def list_subdirs(directory: Path) -> list[Path]:
    """Non-hidden sub-folders of ``directory`` in natural order."""
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=natural_key,
    )


def category_dirs(root: Path, markers: Sequence[str], described: str, expected_layout: str) -> list[Path]:
    """The category folders of an MVTec-like tree: ``root`` itself when it holds one of the
    ``markers`` sub-folders (one category), else its sub-folders that hold one. Raises
    DataLayoutError naming ``described`` (how the markers read in the message) when none does."""
    if any((root / marker).is_dir() for marker in markers):
        return [root]
    categories = [d for d in list_subdirs(root) if any((d / marker).is_dir() for marker in markers)]
    if not categories:
        raise DataLayoutError(f"{root}: no category folder with a {described} sub-folder; expected layout: {expected_layout}")
    return categories


def json_object_line(line: str, where: str) -> dict:
    """One line of a JSON-lines file, which must hold a JSON object; DataLayoutError naming
    ``where`` (file and line) otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataLayoutError(f"{where}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise DataLayoutError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def require_dir(path: Path, expected_layout: str) -> Path:
    if not path.is_dir():
        raise DataLayoutError(f"{path}: folder not found; expected layout: {expected_layout}")
    return path


def index_by_stem(directory: Path) -> dict[str, Path]:
    """Map file stem -> image file for every image in ``directory``.

    Raises DataLayoutError when two files share a stem (e.g. ``001.png`` and
    ``001.bmp``), because a mask could then not be matched unambiguously.
    """
    index: dict[str, Path] = {}
    for path in list_images(directory):
        if path.stem in index:
            raise DataLayoutError(
                f"{directory}: two files share the name {path.stem!r} "
                f"({index[path.stem].name}, {path.name}); cannot match masks unambiguously"
            )
        index[path.stem] = path
    return index


def find_mask(mask_index: dict[str, Path], image_stem: str) -> Path | None:
    """The mask for an image stem, trying ``STEM`` + each of :data:`MASK_STEM_SUFFIXES` in turn."""
    for suffix in MASK_STEM_SUFFIXES:
        match = mask_index.get(image_stem + suffix)
        if match is not None:
            return match
    return None
