"""The metadata files of the field's code bases, read as they are.

AnomalyCLIP's ``meta.json`` (also read by FAPrompt, AdaptCLIP, VisualAD), beside the data::

    {"train": {CLASS: [RECORD, ...]}, "test": {CLASS: [RECORD, ...]}}
    RECORD = {"img_path": "bottle/test/broken_large/000.png",
              "mask_path": "bottle/ground_truth/broken_large/000_mask.png",   ("" when none)
              "cls_name": "bottle", "specie_name": "broken_large", "anomaly": 1}

Paths are relative to the folder of ``meta.json``. PATH: that file or its folder.

AA-CLIP's / MoECLIP's ``metadata/<DATASET>/*.jsonl`` (``full-shot.jsonl``, ``K-shot.jsonl``),
one image per line::

    {"image_path": "grid/test/glue/010.png", "label": 1, "mask_path": "grid/ground_truth/glue/010_mask.png",
     "class_name": "grid"}

``label`` is 0/1 (or 0.0/1.0), ``mask_path`` only on anomalous lines. The paths are
relative to the data set's folder, which those repositories keep elsewhere: PATH is
``FILE.jsonl:DATA_ROOT`` (``FILE.jsonl`` alone: relative to the file's folder), or a
folder holding ``full-shot.jsonl``. Every line is a test image; there is no train split.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..sample import Sample
from .common import DataLayoutError, LayoutSamples, json_object_line

META_FILE = "meta.json"
META_RECORD_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")
META_LAYOUT = (
    'ROOT/meta.json = {"train": {CLASS: [RECORD]}, "test": {CLASS: [RECORD]}}, RECORD = {"img_path", '
    '"mask_path" ("" if none), "cls_name", "specie_name", "anomaly": 0|1}, paths relative to ROOT'
)
JSONL_DEFAULT_FILE = "full-shot.jsonl"
JSONL_LAYOUT = (
    'FILE.jsonl[:DATA_ROOT] with lines {"image_path", "label": 0|1, "class_name", "mask_path" (anomalous '
    "lines)}, paths relative to DATA_ROOT (default: the file's folder); or a folder with full-shot.jsonl"
)


def read_anomalyclip_meta(path: Path) -> LayoutSamples:
    """Read AnomalyCLIP's ``meta.json`` (see the module docstring)."""
    meta_file = path / META_FILE if path.is_dir() else path
    if not meta_file.is_file():
        raise DataLayoutError(f"{meta_file}: file not found; expected: {META_LAYOUT}")
    document = _load_json(meta_file)
    if not isinstance(document, dict) or not {"train", "test"} & set(document):
        raise DataLayoutError(f"{meta_file}: expected an object with 'train' and/or 'test'; expected: {META_LAYOUT}")
    root = meta_file.parent
    missing: list[str] = []
    splits: dict[str, list[Sample]] = {}
    for split in ("train", "test"):
        by_class = document.get(split, {})
        if not isinstance(by_class, dict):
            raise DataLayoutError(f"{meta_file}: '{split}' must map class names to lists of records")
        splits[split] = []
        for class_name, records in by_class.items():
            if not isinstance(records, list):
                raise DataLayoutError(f"{meta_file}: {split}[{class_name!r}] must be a list of records")
            for index, record in enumerate(records):
                where = f"{meta_file}: {split}[{class_name!r}][{index}]"
                splits[split].append(_meta_sample(record, where, root, missing))
    _raise_missing(meta_file, root, missing)
    has_masks = any(s.mask_path is not None for s in splits["test"])
    return LayoutSamples(test=splits["test"], train=splits["train"] if "train" in document else None, has_masks=has_masks)


def _meta_sample(record: object, where: str, root: Path, missing: list[str]) -> Sample:
    if not isinstance(record, dict):
        raise DataLayoutError(f"{where}: expected a record object, got {type(record).__name__}")
    absent = [key for key in ("img_path", "cls_name", "anomaly") if key not in record]
    if absent:
        raise DataLayoutError(f"{where}: missing keys {absent}; a record has {list(META_RECORD_KEYS)}")
    anomaly = record["anomaly"]
    if isinstance(anomaly, bool) or anomaly not in (0, 1):
        raise DataLayoutError(f"{where}: 'anomaly' must be 0 or 1, got {anomaly!r}")
    image = _relative_file(record["img_path"], root, where, "img_path", missing)
    mask = None
    mask_value = record.get("mask_path") or ""
    # AnomalyCLIP's own loader treats a mask path that names a folder as "no mask" (image labels only).
    if anomaly == 1 and mask_value and not (root / str(mask_value)).is_dir():
        mask = _relative_file(mask_value, root, where, "mask_path", missing)
    class_name = _non_empty_string(record["cls_name"], where, "cls_name")
    defect = record.get("specie_name") or None
    return Sample(image, int(anomaly), mask, class_name, defect_type=str(defect) if anomaly == 1 and defect else None)


def read_aaclip_jsonl(path: Path) -> LayoutSamples:
    """Read an AA-CLIP / MoECLIP ``metadata/<DATASET>/*.jsonl`` file (see the module docstring)."""
    jsonl, root = _jsonl_and_root(path)
    missing: list[str] = []
    samples: list[Sample] = []
    with jsonl.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                samples.append(_jsonl_sample(line, f"{jsonl}:{line_number}", root, missing))
    _raise_missing(jsonl, root, missing)
    return LayoutSamples(test=samples, train=None, has_masks=any(s.mask_path is not None for s in samples))


def jsonl_named_paths(path: Path) -> tuple[Path, ...]:
    """The paths an ``aaclip-jsonl`` spec names: a file or folder, or FILE:ROOT's two parts."""
    if path.exists() or ":" not in str(path):
        return (path,)
    file_part, root_part = str(path).rsplit(":", 1)
    return Path(file_part).expanduser(), Path(root_part).expanduser()


def _jsonl_and_root(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        path = path / JSONL_DEFAULT_FILE
    if path.is_file():
        return path, path.parent
    text = str(path)
    if ":" in text:
        file_part, root_part = text.rsplit(":", 1)
        jsonl, root = Path(file_part).expanduser(), Path(root_part).expanduser()
        if not jsonl.is_file():
            raise DataLayoutError(f"{jsonl}: metadata file not found; expected: {JSONL_LAYOUT}")
        if not root.is_dir():
            raise DataLayoutError(f"{root}: data folder not found (the part after ':'); expected: {JSONL_LAYOUT}")
        return jsonl, root
    raise DataLayoutError(f"{path}: metadata file not found; expected: {JSONL_LAYOUT}")


def _jsonl_sample(line: str, where: str, root: Path, missing: list[str]) -> Sample:
    record = json_object_line(line, where)
    absent = [key for key in ("image_path", "label", "class_name") if key not in record]
    if absent:
        raise DataLayoutError(f"{where}: missing keys {absent}; expected: {JSONL_LAYOUT}")
    label = record["label"]
    if isinstance(label, bool) or label not in (0, 1):
        raise DataLayoutError(f"{where}: 'label' must be 0 or 1 (or 0.0 / 1.0), got {label!r}")
    image = _relative_file(record["image_path"], root, where, "image_path", missing)
    mask_value = record.get("mask_path")
    mask = _relative_file(mask_value, root, where, "mask_path", missing) if label == 1 and mask_value else None
    return Sample(image, int(label), mask, _non_empty_string(record["class_name"], where, "class_name"))


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataLayoutError(f"{path}: not valid JSON ({error})") from error


def _non_empty_string(value: object, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataLayoutError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _relative_file(value: object, root: Path, where: str, key: str, missing: list[str]) -> Path:
    path = root / _non_empty_string(value, where, key)
    if not path.is_file():
        missing.append(f"{where}: {path}")
    return path


def _raise_missing(source: Path, root: Path, missing: list[str]) -> None:
    if missing:
        raise DataLayoutError(
            f"{source}: {len(missing)} listed files do not exist (paths are relative to {root}): "
            + "; ".join(missing[:5])
        )
