"""`zsad data ...`: look at a data set, or write a synthetic one."""
from __future__ import annotations

import shutil
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..data.sample import SPLITS
from ..data.synth_categories import CATEGORIES, TEST_CATEGORIES, TRAIN_CATEGORIES
from ..plurals import counted

CATEGORIES_HELP = (
    f"Comma-separated categories (default: all of {', '.join(CATEGORIES)}). Zero-shot split: "
    f"train {','.join(TRAIN_CATEGORIES)} / test {','.join(TEST_CATEGORIES)}."
)


class SynthLayout(str, Enum):
    mvtec = "mvtec"
    visa = "visa"


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into (created if missing).")],
    categories: Annotated[Optional[str], typer.Option(help=CATEGORIES_HELP)] = None,
    size: Annotated[int, typer.Option(min=32, help="Side of the square images in pixels.")] = 128,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed; the same seed writes the same files.")] = 0,
    layout: Annotated[
        SynthLayout, typer.Option(help="Folder layout to write: MVTec-AD, or VisA with split_csv/1cls.csv.")
    ] = SynthLayout.mvtec,
    n_train: Annotated[int, typer.Option(min=0, help="Normal training images per category.")] = 4,
    n_good: Annotated[int, typer.Option(min=0, help="Normal test images per category.")] = 4,
    n_defect: Annotated[int, typer.Option(min=1, help="Anomalous test images per defect kind and category.")] = 3,
    overwrite: Annotated[
        bool, typer.Option(help="Write into a non-empty folder, replacing the generated categories' folders.")
    ] = False,
) -> None:
    """Write a synthetic anomaly-detection data set (textures and objects with exact defect masks)."""
    from ..data.synth import generate_mvtec_like, generate_visa_like

    selected = [c.strip() for c in categories.split(",") if c.strip()] if categories else list(CATEGORIES)
    unknown = [c for c in selected if c not in CATEGORIES]
    if unknown:
        raise typer.BadParameter(
            f"unknown categories {unknown}; choose from {', '.join(CATEGORIES)}", param_hint="--categories"
        )
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a folder", param_hint="OUT")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            typer.echo(f"error: {out} is not empty; pass --overwrite to replace its generated categories", err=True)
            raise typer.Exit(code=1)
        replaced = [out / c for c in selected] + ([out / "split_csv"] if layout is SynthLayout.visa else [])
        for stale in replaced:
            if stale.is_dir():
                shutil.rmtree(stale)
    if layout is SynthLayout.mvtec:
        written = generate_mvtec_like(out, selected, n_train, n_good, n_defect, size, seed)
    else:
        written = generate_visa_like(out, selected, n_train, n_good, n_defect, size, seed)
    typer.echo(f"wrote {layout.value} layout with {counted(len(written), 'category', 'categories')} to {out}: {', '.join(written)}")


def info(
    spec: Annotated[
        str, typer.Argument(help="Data set as KIND:PATH, e.g. mvtec:/data/mvtec_ad or manifest:list.jsonl. Kinds: {data_kinds}.")
    ],
    split: Annotated[
        str,
        typer.Option(
            help=f"Which split to count: {', '.join(SPLITS)}; unlabelled splits of some kinds: {{unlabelled_splits}}."
        ),
    ] = "test",
    duplicates: Annotated[
        bool, typer.Option(help="Also hash the image files and report byte-identical duplicates.")
    ] = False,
) -> None:
    """Count images per class and label, and say whether masks and image labels exist."""
    from ..data import build_dataset, find_duplicate_files

    dataset = build_dataset(spec, split=split)
    typer.echo(
        f"{dataset.kind} at {dataset.root} (split {split}): "
        f"{counted(len(dataset), 'image')}, {counted(len(dataset.classes), 'class', 'classes')}"
    )
    typer.echo(f"has_masks={dataset.has_masks} has_image_labels={dataset.has_image_labels}")
    typer.echo(f"{'class':<24}{'normal':>8}{'anomalous':>11}{'unknown':>9}")
    for class_name in dataset.classes:
        labels = Counter(s.label for s in dataset.samples if s.class_name == class_name)
        typer.echo(f"{class_name:<24}{labels[0]:>8}{labels[1]:>11}{labels[None]:>9}")
    _echo_details(dataset.samples)
    _echo_splits(spec)
    if duplicates:
        groups = find_duplicate_files(s.image_path for s in dataset.samples)
        extra = sum(len(group) - 1 for group in groups)
        typer.echo(f"duplicates: {counted(len(groups), 'group')} of byte-identical images ({counted(extra, 'extra copy', 'extra copies')})")
        for group in groups:
            typer.echo("  " + " = ".join(str(p) for p in group))


def _echo_details(samples) -> None:
    """Defect types, anomaly types and multi-view samples, where the set has them."""
    defects = Counter((s.class_name, s.defect_type) for s in samples if s.defect_type)
    if defects:
        typer.echo(f"{'class':<24}{'defect type':<24}{'images':>8}")
        for (class_name, defect), count in sorted(defects.items()):
            typer.echo(f"{class_name:<24}{defect:<24}{count:>8}")
    anomaly_types = Counter(s.anomaly_type for s in samples if s.anomaly_type)
    if anomaly_types:
        typer.echo("anomaly types (reported apart by zsad test): " + ", ".join(f"{t} {n}" for t, n in sorted(anomaly_types.items())))
    views = Counter(s.group for s in samples if s.group)
    if views:
        per_sample = Counter(views.values())
        typer.echo(
            f"multi-view: {len(views)} samples; views per sample: "
            + ", ".join(f"{n} views x {count}" for n, count in sorted(per_sample.items()))
            + " (zsad test --sample-score max-over-views scores each sample)"
        )


def _echo_splits(spec: str) -> None:
    """Every split the layout offers with its size, the unlabelled (predict-only) ones marked."""
    from ..data.layouts import LAYOUTS
    from ..data.spec import parse_data_spec

    kind, root = parse_data_spec(spec)
    found = LAYOUTS[kind].read(root)
    splits = {"test": found.test, "train": found.train, "validation": found.validation}
    listed = [f"{name} {len(samples)}" for name, samples in splits.items() if samples is not None]
    listed += [f"{name} {len(samples)} (no labels: predict only)" for name, samples in found.predict_only.items()]
    typer.echo("splits: " + ", ".join(listed))
