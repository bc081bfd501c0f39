"""Tiny generated trees in the real layout of every data-set kind of the papers' Tab. 1.

``make_tree(kind, root)`` writes a few small images (and masks) under ``root`` in the folder
layout the kind's public release uses, and returns the counts a reader must find:
``{"normal": test normal, "anomalous": test anomalous, "train": normal train images or None}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from data_factories import save, square_image, square_mask

from zsad.data.synth import generate_mvtec_like, generate_visa_like

SIZE = (40, 32)  # (W, H) of the generated images
NORMAL_COLOUR = (90, 90, 90)
Counts = dict[str, int | None]


def normal_image(size: tuple[int, int] = SIZE) -> np.ndarray:
    return square_image(size, colour=NORMAL_COLOUR)


def black_mask(size: tuple[int, int] = SIZE) -> np.ndarray:
    width, height = size
    return np.zeros((height, width), dtype=np.uint8)


# --- the kinds this module adds trees for -------------------------------------------------


def make_bmad_tree(root: Path, n_normal: int = 2, n_anomalous: int = 3, n_train: int = 2) -> Counts:
    """BMAD: {train,valid,test}/{good,Ungood}/{img,label}; valid/ holds files the reader must skip."""
    for index in range(n_train):
        save(normal_image(), root / "train" / "good" / "img" / f"{index:05d}_60.png")
    for split in ("valid", "test"):
        for index in range(n_normal):
            save(normal_image(), root / split / "good" / "img" / f"{index:05d}_70.png")
        for index in range(n_anomalous):
            save(square_image(SIZE), root / split / "Ungood" / "img" / f"{index:05d}_80.png")
            save(square_mask(SIZE), root / split / "Ungood" / "label" / f"{index:05d}_80.png")
    return {"normal": n_normal, "anomalous": n_anomalous, "train": n_train}


def make_polyp_tree(root: Path, n_images: int = 3, image_ext: str = ".png", mask_ext: str = ".png") -> Counts:
    """PraNet's TestDataset layout (CVC-ColonDB, CVC-300) and EndoTect's: images/ + masks/ of the same name."""
    for index in range(1, n_images + 1):
        save(square_image(SIZE), root / "images" / f"{index}{image_ext}")
        save(square_mask(SIZE), root / "masks" / f"{index}{mask_ext}")
    return {"normal": 0, "anomalous": n_images, "train": None}


def make_isic_tree(root: Path, n_images: int = 3) -> Counts:
    """ISIC 2016 Part 1 test: ISIC_N.jpg with ISIC_N_Segmentation.png in two folders."""
    for index in range(n_images):
        stem = f"ISIC_{index:07d}"
        save(square_image(SIZE), root / "ISBI2016_ISIC_Part1_Test_Data" / f"{stem}.jpg", quality=95)
        save(square_mask(SIZE), root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / f"{stem}_Segmentation.png")
    return {"normal": 0, "anomalous": n_images, "train": None}


def make_ksdd_tree(root: Path) -> Counts:
    """KolektorSDD: kosNN/PartK.jpg with PartK_label.bmp; all-black masks mark the normal images."""
    size = (24, 60)  # tall strips, like the real 500 x 1240 images
    anomalous = {("kos01", 2), ("kos02", 0)}
    for folder in ("kos01", "kos02"):
        for part in range(3):
            is_anomalous = (folder, part) in anomalous
            save(square_image(size) if is_anomalous else normal_image(size), root / folder / f"Part{part}.jpg", quality=95)
            save(square_mask(size) if is_anomalous else black_mask(size), root / folder / f"Part{part}_label.bmp")
    return {"normal": 4, "anomalous": 2, "train": None}


def make_dagm_tree(root: Path) -> Counts:
    """DAGM 2007: ClassN/{Train,Test}/NNNN.PNG, Label/NNNN_label.PNG for defective ones, and Labels.txt."""
    for class_name in ("Class1", "Class2"):
        for split, n_normal, n_defective in (("Train", 2, 1), ("Test", 2, 2)):
            split_dir = root / class_name / split
            rows = []
            for index in range(1, n_normal + n_defective + 1):
                name = f"{index:04d}.PNG"
                defective = index > n_normal
                save(square_image(SIZE) if defective else normal_image(), split_dir / name, format="PNG")
                if defective:
                    save(square_mask(SIZE), split_dir / "Label" / f"{index:04d}_label.PNG", format="PNG")
                rows.append(f"{index}\t{int(defective)}\t{name}\t0\t{f'{index:04d}_label.PNG' if defective else 0}")
            (split_dir / "Label").mkdir(parents=True, exist_ok=True)
            (split_dir / "Label" / "Labels.txt").write_text("1\n" + "\n".join(rows) + "\n")
    return {"normal": 4, "anomalous": 4, "train": 4}


# --- the kinds that existed before, for the whole-table benchmark --------------------------


def make_mvtec_like(root: Path) -> Counts:
    generate_mvtec_like(root, ["tile"], n_train=1, n_good=1, n_defect_per_kind=1, size=32)
    return {"normal": 1, "anomalous": 4, "train": 1}


def make_visa_like(root: Path) -> Counts:
    generate_visa_like(root, ["disc"], n_train=1, n_good=1, n_defect_per_kind=1, size=32)
    return {"normal": 1, "anomalous": 4, "train": 1}


def make_kvasir_tree(root: Path) -> Counts:
    return make_polyp_tree(root, image_ext=".jpg", mask_ext=".jpg")


def make_clinicdb_tree(root: Path) -> Counts:
    for index in range(1, 4):
        save(square_image(SIZE), root / "Original" / f"{index}.png")
        save(square_mask(SIZE), root / "Ground Truth" / f"{index}.png")
    return {"normal": 0, "anomalous": 3, "train": None}


def make_headct_tree(root: Path) -> Counts:
    rows = ["id, hemorrhage"]
    for index, label in enumerate((0, 0, 1, 1)):
        save(square_image(SIZE) if label else normal_image(), root / "head_ct" / f"{index:03d}.png")
        rows.append(f"{index}, {label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"normal": 2, "anomalous": 2, "train": None}


def make_yes_no_tree(root: Path) -> Counts:
    for index in range(2):
        save(square_image(SIZE), root / "yes" / f"Y{index}.jpg", quality=95)
        save(normal_image(), root / "no" / f"N{index}.jpg", quality=95)
    return {"normal": 2, "anomalous": 2, "train": None}


MAKERS = {
    "mvtec": make_mvtec_like, "btad": make_mvtec_like, "mpdd": make_mvtec_like, "dtd": make_mvtec_like,
    "rsdd": make_mvtec_like, "ksdd2": make_mvtec_like, "visa": make_visa_like,
    "kvasir": make_kvasir_tree, "clinicdb": make_clinicdb_tree, "headct": make_headct_tree,
    "brainmri": make_yes_no_tree, "br35h": make_yes_no_tree,
    "ksdd": make_ksdd_tree, "dagm": make_dagm_tree,
    "bmad-brainmri": make_bmad_tree, "bmad-liverct": make_bmad_tree, "bmad-retinaoct": make_bmad_tree,
    "colondb": make_polyp_tree, "cvc300": make_polyp_tree, "endo": make_polyp_tree, "isic": make_isic_tree,
}  # fmt: skip


def make_tree(kind: str, root: Path) -> Counts:
    """Write a tiny ``kind`` tree under ``root``; return its expected counts."""
    return MAKERS[kind](root)
