"""`zsad demo`: the whole pipeline offline, on generated data and the tiny random model.

Nothing is downloaded. The numbers it prints come from random CLIP weights: they show
that every stage runs end to end, not how well any method detects anomalies.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .api import load
from .backbone import TINY_MODEL_NAME
from .data.synth import TEST_CATEGORIES, TRAIN_CATEGORIES, generate_mvtec_like
from .engine.prediction import predict_files
from .engine.testing import run_test
from .fileio import check_can_write
from .reports import format_percent

SHOWN_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def _metadata(detector) -> dict:
    described = detector.model.backbone.describe()
    return {
        "method": detector.model.name,
        "backbone": described["model_name"],
        "weights": described["weights"],
        "image_size": described["image_size"],
        "pipeline_check": True,
    }


def run_demo(
    out: Path,
    image_size: int = 128,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> dict[str, dict]:
    """Generate MVTec-layout data, evaluate the zero-shot baseline on the categories
    reserved for testing, predict on a few images. Returns {method: mean metrics}."""
    console = console or Console()
    data_dir = out / "data"
    check_can_write([data_dir, out / "zeroshot" / "metrics.json", out / "predict" / "scores.csv"], overwrite)
    console.rule("[bold]zsad demo: pipeline check on generated data, random weights")
    console.print(f"1/3 generating MVTec-layout data in {data_dir} (train categories {', '.join(TRAIN_CATEGORIES)}; "
                  f"unseen test categories {', '.join(TEST_CATEGORIES)})")
    generate_mvtec_like(data_dir, categories=list(TRAIN_CATEGORIES + TEST_CATEGORIES), size=image_size, seed=0)
    spec = f"mvtec:{data_dir}"

    console.print("2/3 evaluating the training-free baseline (zeroshot) on the unseen categories")
    zeroshot = load("zeroshot", backbone=TINY_MODEL_NAME, weights="random", image_size=image_size, device=device)
    results = {
        "zeroshot": run_test(
            zeroshot, spec, out / "zeroshot", classes=list(TEST_CATEGORIES), save_maps=2, overwrite=True,
            show_progress=show_progress, meta=_metadata(zeroshot),
        ).report["mean"]
    }

    console.print("3/3 predicting on a few test images (overlays, raw maps, scores.csv)")
    examples = sorted((data_dir / TEST_CATEGORIES[0] / "test").rglob("*.png"))[:6]
    predict_files(zeroshot, examples, out / "predict", threshold=0.5, overwrite=True,
                  show_progress=show_progress, meta=_metadata(zeroshot))

    table = Table(title="Mean over the unseen categories (RANDOM WEIGHTS: pipeline check, not a result)")
    table.add_column("method")
    for metric in SHOWN_METRICS:
        table.add_column(metric)
    for method, mean in results.items():
        table.add_row(method, *(format_percent(mean.get(metric)) for metric in SHOWN_METRICS))
    console.print(table)
    console.print(f"Reports: {out}/*/metrics.md; overlays: {out}/predict/overlays; panels: {out}/zeroshot/maps")
    return results
