"""Few-shot options of `zsad predict` and `zsad test` (reference images, shots, seeds)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

Reference = Annotated[
    Optional[Path],
    typer.Option(help="Folder (or file) of a few normal images of the same category: adds a patch-feature memory bank (few-shot mode)."),
]
Shots = Annotated[
    int,
    typer.Option(min=0, help="Few-shot evaluation: K normal references per class drawn from its train/good images (0 = zero-shot)."),
]
ShotSeeds = Annotated[
    Optional[List[int]],
    typer.Option("--shot-seed", help="Seed of the reference draw; repeat for several seeds (mean ± std reported). Default: 0."),
]
FusionWeight = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Few-shot: weight of the memory-bank map and score against the zero-shot ones (0 = zero-shot "
                                        "output)."),
]


def reference_paths(reference: Path) -> list[Path]:
    """The image files a --reference option names (a folder is searched recursively),
    checked before torch is imported."""
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..discovery import reference_images

    return reference_images(reference, IMAGE_SUFFIXES)


def with_reference_folder(predictor, reference: Path, weight: float, meta: dict):
    """The predictor in few-shot mode with every image under ``reference`` in its memory
    bank; records the number of references and the weight in ``meta``."""
    from ..engine.fewshot import with_reference_folder as few_shot

    scorer = few_shot(predictor, reference, weight)
    meta.update(references=scorer.identity()["references"]["count"], fusion_weight=weight)
    return scorer
