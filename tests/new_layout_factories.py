"""Mini trees of MVTec AD 2, Real-IAD and MVTec LOCO in their release layouts, and the
metadata files of AnomalyCLIP (meta.json) and AA-CLIP / MoECLIP (jsonl), for the tests.

Every image of a tree differs (its square sits elsewhere), so a test can tell whether
a mask was matched to the right image. Each function returns the counts to check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from data_factories import save

SIDE = 32


def shifted_square(index: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, mask (H, W) uint8 0/255): an 8-pixel square whose place depends on ``index``."""
    image = np.full((side, side, 3), 30, dtype=np.uint8)
    mask = np.zeros((side, side), dtype=np.uint8)
    top, left = (index * 3) % (side - 8), (index * 5) % (side - 8)
    image[top : top + 8, left : left + 8] = (220, 40, 40)
    mask[top : top + 8, left : left + 8] = 255
    return image, mask


def plain(side: int = SIDE) -> np.ndarray:
    return np.full((side, side, 3), 90, dtype=np.uint8)


# --- MVTec AD 2 ---------------------------------------------------------------------------


def make_mvtec_ad2_tree(
    root: Path, categories: tuple[str, ...] = ("can", "vial"), n_validation: int = 2
) -> dict[str, int]:
    """Per category: 3 train, ``n_validation`` validation, 2 good + 2 bad public test images
    (masks ``test_public/ground_truth/bad/NAME_mask.png``), 3 test_private, 2
    test_private_mixed."""
    for category in categories:
        base = root / category
        for index in range(3):
            save(plain(), base / "train" / "good" / f"{index:03d}_regular.png")
            save(plain(), base / "test_private" / f"{index:03d}_regular.png")
        for index in range(n_validation):
            save(plain(), base / "validation" / "good" / f"{index:03d}_regular.png")
        for index in range(2):
            save(plain(), base / "test_public" / "good" / f"{index:03d}_regular.png")
            save(plain(), base / "test_private_mixed" / f"{index:03d}_mixed.png")
            image, mask = shifted_square(index)
            save(image, base / "test_public" / "bad" / f"{index:03d}_overexposed.png")
            save(mask, base / "test_public" / "ground_truth" / "bad" / f"{index:03d}_overexposed_mask.png")
    n = len(categories)
    return {"train": 3 * n, "validation": n_validation * n, "good": 2 * n, "bad": 2 * n, "test_private": 3 * n,
            "test_private_mixed": 2 * n}  # fmt: skip


# --- Real-IAD -----------------------------------------------------------------------------

REALIAD_TIME = "20231021130525"


def _realiad_view(root: Path, category: str, relative: str, index: int, with_mask: bool) -> dict:
    """Write one view (and its mask) under ``realiad_256/CAT``; its JSON entry without the class."""
    image, mask = shifted_square(index) if with_mask else (plain(), None)
    save(image, root / "realiad_256" / category / relative, quality=95)
    entry = {"category": category, "image_path": relative, "mask_path": None}
    if mask is not None:
        mask_relative = relative.replace(".jpg", "_mask.png")
        save(mask, root / "realiad_256" / category / mask_relative)
        entry["mask_path"] = mask_relative
    return entry


def make_realiad_tree(root: Path, category: str = "audiojack") -> dict[str, int]:
    """Real-IAD at 256 px with ``realiad_jsons/realiad_jsons/CAT.json``.

    train: OK sample S0001 (5 views). test: OK sample S0003 (5 views); NG/AK sample S0002,
    the defect seen by C1 and C3 only (the other views "OK", without masks); NG/BX sample
    S0004, seen by all 5 views.
    """

    def sample(folder: str, number: int, anomalous_views: tuple[int, ...], anomaly_class: str) -> list[dict]:
        state = "OK" if folder == "OK" else "NG"
        entries = []
        for view in range(1, 6):
            relative = f"{folder}/S{number:04d}/{category}_{number:04d}_{state}_C{view}_{REALIAD_TIME}.jpg"
            seen = view in anomalous_views
            entry = _realiad_view(root, category, relative, number * 10 + view, seen)
            entries.append({**entry, "anomaly_class": anomaly_class if seen else "OK"})
        return entries

    document = {
        "meta": {"prefix": "", "normal_class": "OK"},
        "train": sample("OK", 1, (), "OK"),
        "test": sample("OK", 3, (), "OK") + sample("NG/AK", 2, (1, 3), "AK") + sample("NG/BX", 4, (1, 2, 3, 4, 5), "BX"),
    }
    json_dir = root / "realiad_jsons" / "realiad_jsons"
    json_dir.mkdir(parents=True, exist_ok=True)
    (json_dir / f"{category}.json").write_text(json.dumps(document))
    return {"train": 5, "test": 15, "anomalous_views": 7, "test_samples": 3, "anomalous_samples": 2}


# --- MVTec LOCO ---------------------------------------------------------------------------


def make_mvtec_loco_tree(root: Path, category: str = "breakfast_box") -> dict[str, int]:
    """2 train, 1 validation, 2 good, 2 logical and 1 structural test images. Logical 000
    has two mask files (two regions, value 255 and 119 as in LOCO's per-defect values)."""
    base = root / category
    for index in range(2):
        save(plain(), base / "train" / "good" / f"{index:03d}.png")
        save(plain(), base / "test" / "good" / f"{index:03d}.png")
    save(plain(), base / "validation" / "good" / "000.png")
    for folder, count in (("logical_anomalies", 2), ("structural_anomalies", 1)):
        for index in range(count):
            image, mask = shifted_square(index + 7 * len(folder))
            save(image, base / "test" / folder / f"{index:03d}.png")
            save(mask, base / "ground_truth" / folder / f"{index:03d}" / "000.png")
    second = np.zeros((SIDE, SIDE), dtype=np.uint8)
    second[-4:, -4:] = 119
    save(second, base / "ground_truth" / "logical_anomalies" / "000" / "001.png")
    return {"train": 2, "validation": 1, "good": 2, "logical": 2, "structural": 1}


# --- the lineage's metadata files ---------------------------------------------------------


def make_mvtec_images(root: Path) -> list[dict]:
    """A small MVTec tree (bottle: 2 good, 2 broken_large, 1 train) and its records in
    AnomalyCLIP's meta.json schema (mask_path "" for normal images)."""
    records = []
    save(plain(), root / "bottle" / "train" / "good" / "000.png")
    for index in range(2):
        save(plain(), root / "bottle" / "test" / "good" / f"{index:03d}.png")
        records.append({"img_path": f"bottle/test/good/{index:03d}.png", "mask_path": "", "cls_name": "bottle",
                        "specie_name": "good", "anomaly": 0})  # fmt: skip
        image, mask = shifted_square(index)
        save(image, root / "bottle" / "test" / "broken_large" / f"{index:03d}.png")
        save(mask, root / "bottle" / "ground_truth" / "broken_large" / f"{index:03d}_mask.png")
        records.append({"img_path": f"bottle/test/broken_large/{index:03d}.png",
                        "mask_path": f"bottle/ground_truth/broken_large/{index:03d}_mask.png",
                        "cls_name": "bottle", "specie_name": "broken_large", "anomaly": 1})  # fmt: skip
    return records


def make_anomalyclip_meta(root: Path) -> Path:
    """``root/meta.json`` as AnomalyCLIP's generate_dataset_json scripts write it."""
    test = make_mvtec_images(root)
    train = [{"img_path": "bottle/train/good/000.png", "mask_path": "", "cls_name": "bottle",
              "specie_name": "good", "anomaly": 0}]  # fmt: skip
    path = root / "meta.json"
    path.write_text(json.dumps({"train": {"bottle": train}, "test": {"bottle": test}}, indent=4) + "\n")
    return path


def make_aaclip_jsonl(data_root: Path, metadata_root: Path, dataset: str = "MVTec") -> Path:
    """``metadata_root/metadata/<dataset>/full-shot.jsonl`` as AA-CLIP keeps it (paths
    relative to ``data_root``, elsewhere; float labels on some lines, as in its medical files)."""
    lines = []
    for record in make_mvtec_images(data_root):
        line = {"image_path": record["img_path"], "label": record["anomaly"], "class_name": record["cls_name"]}
        if record["anomaly"]:
            line["mask_path"] = record["mask_path"]
            line["label"] = 1.0
        lines.append(line)
    path = metadata_root / "metadata" / dataset / "full-shot.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def mvtec_records(mvtec_root: Path, split: str = "test") -> list[dict]:
    """AnomalyCLIP records (meta.json schema) of every image of an MVTec tree's ``split``."""
    records = []
    for image in sorted((mvtec_root).glob(f"*/{split}/*/*.png")):
        category, _, defect = image.parts[-4:-1]
        mask = image.parent.parent.parent / "ground_truth" / defect / f"{image.stem}_mask.png"
        anomalous = defect != "good"
        records.append({"img_path": image.relative_to(mvtec_root).as_posix(),
                        "mask_path": mask.relative_to(mvtec_root).as_posix() if anomalous else "",
                        "cls_name": category, "specie_name": defect, "anomaly": int(anomalous)})  # fmt: skip
    return records


def write_anomalyclip_meta_for(mvtec_root: Path) -> Path:
    """``mvtec_root/meta.json`` for an existing MVTec tree, as AnomalyCLIP's mvtec.py writes it."""
    document: dict[str, dict[str, list[dict]]] = {}
    for split in ("train", "test"):
        by_class = document.setdefault(split, {})
        for record in mvtec_records(mvtec_root, split):
            by_class.setdefault(record["cls_name"], []).append(record)
    path = mvtec_root / "meta.json"
    path.write_text(json.dumps(document, indent=4) + "\n")
    return path


def write_aaclip_jsonl_for(mvtec_root: Path, jsonl: Path) -> Path:
    """An AA-CLIP full-shot.jsonl at ``jsonl`` for an existing MVTec tree's test split."""
    lines = []
    for record in mvtec_records(mvtec_root):
        line = {"image_path": record["img_path"], "label": record["anomaly"], "class_name": record["cls_name"]}
        if record["anomaly"]:
            line["mask_path"] = record["mask_path"]
        lines.append(json.dumps(line) + "\n")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("".join(lines))
    return jsonl
