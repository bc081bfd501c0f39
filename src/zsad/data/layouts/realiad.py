"""Real-IAD: 30 categories, 5 camera views (C1..C5) per physical sample, splits in JSON files.

Layout of the release (one or more resolutions beside the JSON splits)::

    ROOT/realiad_{256,512,1024,raw}/CAT/OK/S0001/CAT_0001_OK_C1_<time>.jpg
    ROOT/realiad_{256,512,1024,raw}/CAT/NG/DEFECT/S0001/CAT_0001_NG_C1_<time>.jpg
                                                      .../CAT_0001_NG_C1_<time>_mask.png
    ROOT/realiad_jsons/realiad_jsons/CAT.json

``CAT.json`` is ``{"meta": {"normal_class": "OK", ...}, "train": [...], "test": [...]}``,
each entry ``{"category", "anomaly_class", "image_path", "mask_path"}`` with paths
relative to ``realiad_N/CAT``; an entry is anomalous when its ``anomaly_class`` is not
the meta's ``normal_class`` ("OK"), which names the defect ("AK", "BX", ...).

The spec's PATH is a resolution folder (``realiad:ROOT/realiad_512``) or ROOT when it
holds a single resolution. Categories without an image folder (a partial download)
are left out. Every image carries its sample (``CAT/OK/S0001``) as its group, so an
evaluation can score a sample by the max over its views.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..sample import Sample
from .common import (
    DataLayoutError,
    LayoutSamples,
    list_subdirs,
    require_dir,
)

RESOLUTION_DIR = re.compile(r"realiad_(256|512|1024|raw)")
# Where the multi-view JSON splits sit, relative to ROOT (the release nests the folder once).
JSON_DIRS = (Path("realiad_jsons") / "realiad_jsons", Path("realiad_jsons"))
DEFAULT_NORMAL_CLASS = "OK"
EXPECTED_LAYOUT = (
    "ROOT/realiad_{256,512,1024,raw}/CATEGORY/{OK,NG/DEFECT}/SNNNN/*_C{1..5}_*.jpg with *_mask.png, and "
    "ROOT/realiad_jsons/realiad_jsons/CATEGORY.json ({meta, train, test}); PATH: ROOT/realiad_N or ROOT"
)


def read_realiad(path: Path) -> LayoutSamples:
    """Read the train and test splits of every category whose JSON and images exist."""
    require_dir(path, EXPECTED_LAYOUT)
    image_root = _image_root(path)
    json_dir = _json_dir(image_root)
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    read_any = False
    for json_file in sorted(json_dir.glob("*.json")):
        category_dir = image_root / json_file.stem
        if not category_dir.is_dir():
            continue
        read_any = True
        for split, samples in _read_category_json(json_file, category_dir).items():
            splits[split] += samples
    if not read_any:
        raise DataLayoutError(
            f"{json_dir}: none of its CATEGORY.json files has an image folder {image_root}/CATEGORY; "
            f"expected layout: {EXPECTED_LAYOUT}"
        )
    has_masks = any(s.mask_path is not None for s in splits["test"] + splits["train"])
    return LayoutSamples(test=splits["test"], train=splits["train"], has_masks=has_masks)


def _image_root(path: Path) -> Path:
    if RESOLUTION_DIR.fullmatch(path.name):
        return path
    candidates = [d for d in list_subdirs(path) if RESOLUTION_DIR.fullmatch(d.name)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataLayoutError(f"{path}: no realiad_256/512/1024/raw folder; expected layout: {EXPECTED_LAYOUT}")
    names = ", ".join(d.name for d in candidates)
    raise DataLayoutError(f"{path}: several resolutions ({names}); name one, e.g. realiad:{candidates[0]}")


def _json_dir(image_root: Path) -> Path:
    for base in (image_root.parent, image_root):
        for relative in JSON_DIRS:
            folder = base / relative
            if folder.is_dir() and any(folder.glob("*.json")):
                return folder
    tried = ", ".join(str(image_root.parent / r) for r in JSON_DIRS)
    raise DataLayoutError(f"{image_root}: no Real-IAD JSON splits found (looked in {tried}); expected layout: {EXPECTED_LAYOUT}")


def _read_category_json(json_file: Path, category_dir: Path) -> dict[str, list[Sample]]:
    try:
        document = json.loads(json_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataLayoutError(f"{json_file}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or not any(isinstance(document.get(k), list) for k in ("train", "test")):
        raise DataLayoutError(f"{json_file}: expected an object with 'train' and/or 'test' lists of entries")
    meta = document.get("meta") or {}
    normal_class = meta.get("normal_class", DEFAULT_NORMAL_CLASS) if isinstance(meta, dict) else DEFAULT_NORMAL_CLASS
    category = json_file.stem
    splits: dict[str, list[Sample]] = {}
    missing: list[str] = []
    for split in ("train", "test"):
        entries = document.get(split) or []
        if not isinstance(entries, list):
            raise DataLayoutError(f"{json_file}: '{split}' must be a list of entries")
        splits[split] = [
            _entry_sample(entry, f"{json_file}: {split}[{index}]", category_dir, category, normal_class, missing)
            for index, entry in enumerate(entries)
        ]
    if missing:
        raise DataLayoutError(
            f"{json_file}: {len(missing)} listed files do not exist (paths are relative to {category_dir}): "
            + "; ".join(missing[:5])
        )
    return splits


def _entry_sample(
    entry: object, where: str, category_dir: Path, category: str, normal_class: str, missing: list[str]
) -> Sample:
    if not isinstance(entry, dict) or not isinstance(entry.get("image_path"), str) or not isinstance(
        entry.get("anomaly_class"), str
    ):
        raise DataLayoutError(f"{where}: expected an object with string 'image_path' and 'anomaly_class', got {entry!r}")
    image = category_dir / entry["image_path"]
    mask_value = entry.get("mask_path")
    if mask_value is not None and not isinstance(mask_value, str):
        raise DataLayoutError(f"{where}: 'mask_path' must be a string or null, got {mask_value!r}")
    mask = category_dir / mask_value if mask_value else None
    missing.extend(str(p) for p in (image, mask) if p is not None and not p.is_file())
    anomalous = entry["anomaly_class"] != normal_class
    group = f"{category}/{Path(entry['image_path']).parent.as_posix()}"
    defect = entry["anomaly_class"] if anomalous else None
    return Sample(image, int(anomalous), mask, category, defect_type=defect, group=group)
