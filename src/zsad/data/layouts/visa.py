"""VisA: ``CAT/Data/Images/{Normal,Anomaly}/*.JPG``, ``CAT/Data/Masks/Anomaly/*.png``.

The split comes from ``ROOT/split_csv/1cls.csv`` (columns ``object,split,label,image,mask``;
labels ``normal``/``anomaly``; paths relative to ROOT; ``mask`` empty for normal images).
Without the csv, every image under the category folders is a test image and there is no
train split.
"""

from __future__ import annotations

import csv
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

SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
CSV_LABELS = {"normal": 0, "anomaly": 1}
EXPECTED_LAYOUT = (
    "ROOT/split_csv/1cls.csv (object,split,label,image,mask) with ROOT/CATEGORY/Data/Images/"
    "{Normal,Anomaly}/* and ROOT/CATEGORY/Data/Masks/Anomaly/*, or the folders alone"
)


def read_visa(root: Path) -> LayoutSamples:
    """Read a VisA tree, driven by ``split_csv/1cls.csv`` when it exists."""
    require_dir(root, EXPECTED_LAYOUT)
    csv_path = root / SPLIT_CSV
    if csv_path.is_file():
        return _read_from_csv(root, csv_path)
    return _read_from_folders(root)


def _read_from_csv(root: Path, csv_path: Path) -> LayoutSamples:
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    missing: list[str] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [column.strip().lower() for column in next(reader, [])]
        if any(column not in header for column in CSV_COLUMNS):
            raise DataLayoutError(f"{csv_path}: header {header} lacks one of the columns {list(CSV_COLUMNS)}")
        position = {column: header.index(column) for column in CSV_COLUMNS}
        for line_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise DataLayoutError(f"{csv_path}:{line_number}: expected {len(header)} columns, got {len(row)}")
            values = {column: row[index].strip() for column, index in position.items()}
            if values["split"] not in splits:
                raise DataLayoutError(f"{csv_path}:{line_number}: split {values['split']!r} is not train/test")
            if values["label"] not in CSV_LABELS:
                raise DataLayoutError(f"{csv_path}:{line_number}: label {values['label']!r} is not normal/anomaly")
            image = root / values["image"]
            mask = root / values["mask"] if values["mask"] else None
            for path in (image, mask):
                if path is not None and not path.is_file():
                    missing.append(f"line {line_number}: {path}")
            splits[values["split"]].append(Sample(image, CSV_LABELS[values["label"]], mask, values["object"]))
    if missing:
        shown = "; ".join(missing[:5])
        raise DataLayoutError(
            f"{csv_path}: {len(missing)} listed files do not exist (paths are relative to {root}): {shown}"
        )
    has_masks = any(s.mask_path is not None for s in splits["test"])
    return LayoutSamples(test=splits["test"], train=splits["train"], has_masks=has_masks)


def _read_from_folders(root: Path) -> LayoutSamples:
    categories = [d for d in list_subdirs(root) if (d / "Data" / "Images").is_dir()]
    if not categories:
        raise DataLayoutError(
            f"{root}: no {SPLIT_CSV} and no CATEGORY/Data/Images folder; expected layout: {EXPECTED_LAYOUT}"
        )
    test: list[Sample] = []
    for category in categories:
        images = category / "Data" / "Images"
        test.extend(Sample(p, 0, None, category.name) for p in list_images(images / "Normal"))
        mask_index = index_by_stem(category / "Data" / "Masks" / "Anomaly")
        test.extend(
            Sample(p, 1, find_mask(mask_index, p.stem), category.name) for p in list_images(images / "Anomaly")
        )
    has_masks = any((c / "Data" / "Masks").is_dir() for c in categories)
    return LayoutSamples(test=test, train=None, has_masks=has_masks)
