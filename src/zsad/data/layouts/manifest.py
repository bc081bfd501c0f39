"""A JSON-lines manifest: one image per line.

Each non-empty line is an object with ``image_path`` (required), ``label`` (required:
0, 1 or null for unknown), optional ``mask_path`` and optional ``class_name``
(default ``"object"``). Relative paths are relative to the manifest's folder.
Any other key is an error (it is most likely a typo). There is no train split.
"""

from __future__ import annotations

from pathlib import Path

from ..sample import Sample
from .common import DataLayoutError, LayoutSamples, json_object_line

DEFAULT_CLASS_NAME = "object"
ALLOWED_KEYS = frozenset({"image_path", "label", "mask_path", "class_name"})
EXPECTED_LAYOUT = (
    'FILE.jsonl with lines like {"image_path": "a.png", "label": 1, "mask_path": "a_mask.png", '
    '"class_name": "screw"}'
)


def read_manifest(manifest: Path) -> LayoutSamples:
    """Read every line of a JSON-lines manifest; a bad line raises with its line number."""
    if not manifest.is_file():
        raise DataLayoutError(f"{manifest}: manifest file not found; expected: {EXPECTED_LAYOUT}")
    base = manifest.parent
    samples: list[Sample] = []
    with manifest.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                samples.append(_parse_line(line, base, f"{manifest}:{line_number}"))
    return LayoutSamples(test=samples, train=None, has_masks=any(s.mask_path is not None for s in samples))


def _parse_line(line: str, base: Path, where: str) -> Sample:
    record = json_object_line(line, where)
    unknown = sorted(set(record) - ALLOWED_KEYS)
    if unknown:
        raise DataLayoutError(f"{where}: unknown keys {unknown}; allowed: {sorted(ALLOWED_KEYS)}")
    if "image_path" not in record or "label" not in record:
        raise DataLayoutError(f"{where}: 'image_path' and 'label' are required")
    label = record["label"]
    if label is not None and (isinstance(label, bool) or label not in (0, 1)):
        raise DataLayoutError(f"{where}: label must be 0, 1 or null, got {label!r}")
    image = _resolve(record["image_path"], base, where, "image_path")
    mask = _resolve(record["mask_path"], base, where, "mask_path") if record.get("mask_path") is not None else None
    class_name = record.get("class_name", DEFAULT_CLASS_NAME)
    if not isinstance(class_name, str) or not class_name:
        raise DataLayoutError(f"{where}: class_name must be a non-empty string, got {class_name!r}")
    return Sample(image, label, mask, class_name)


def _resolve(value: object, base: Path, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DataLayoutError(f"{where}: {key} must be a non-empty string, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise DataLayoutError(f"{where}: {key} {path} does not exist")
    return path
