"""Sets that the ZSAD code bases (AdaCLIP, AnomalyCLIP) ship reorganised into the MVTec-AD layout.

AdaCLIP's ``data_preprocess`` scripts turn KolektorSDD, DAGM, ISIC, CVC-ColonDB and EndoTect
into ``ROOT[/CLASS]/test/{good,DEFECT}/*`` with masks in ``ground_truth/DEFECT/``; the numbers of
PromptMoE's and WMoE-CLIP's Tab. 1 come from such trees. Each kind of those sets reads its
original release and, when the folder has this shape instead, the reorganised tree.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .common import DataLayoutError, LayoutSamples, list_subdirs
from .mvtec import read_mvtec_like


def is_mvtec_like(root: Path) -> bool:
    """True when ``root`` or one of its sub-folders has a ``test/`` folder (an MVTec-like tree)."""
    if (root / "test").is_dir():
        return True
    return root.is_dir() and any((child / "test").is_dir() for child in list_subdirs(root))


def read_prepared(root: Path, class_name: str | None) -> LayoutSamples:
    """Read an MVTec-like reorganised tree; ``class_name`` renames every class (a one-class set), None keeps them.

    Every set read this way has pixel labels, so a tree without ``ground_truth/`` is refused
    rather than read as image labels only.
    """
    found = read_mvtec_like(root)
    if not found.has_masks:
        raise DataLayoutError(
            f"{root}: MVTec-like tree without a ground_truth/ folder; this set has masks: put them in "
            "[CLASS/]ground_truth/DEFECT/ named like their images (NAME.png, NAME_mask.png, ...)"
        )
    if class_name is None:
        return found

    def rename(samples: list | None) -> list | None:
        return None if samples is None else [replace(s, class_name=class_name) for s in samples]

    return LayoutSamples(test=rename(found.test), train=rename(found.train), has_masks=found.has_masks)
