"""`zsad demo`: the whole pipeline offline, on generated data and the tiny random model.

Nothing is downloaded. The numbers it prints come from random CLIP weights: they show
that every stage runs end to end, not how well any method detects anomalies.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .api import Predictor, build_detector, load
from .clip_weights import TINY_MODEL_NAME
from .data.synth import TEST_CATEGORIES, TRAIN_CATEGORIES, generate_mvtec_like
from .engine.prediction import predict_files
from .engine.runtime import resolve_device
from .engine.testing import run_test
from .engine.train_config import TrainingConfig
from .engine.training import fit
from .fileio import check_can_write
from .plurals import counted
from .reports import format_percent
from .text import ClassNames

SHOWN_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def run_demo(
    out: Path,
    image_size: int = 128,
    device: str = "auto",
    overwrite: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    epochs: int = 2,
) -> dict[str, dict]:
    """Generate MVTec-layout data (training and unseen test categories in separate
    trees), evaluate the zero-shot baseline, train MoECLIP briefly and evaluate it on the
    unseen categories, predict on a few images. Returns {method: mean metrics}."""
    console = console or Console()
    train_dir, test_dir = out / "data-train", out / "data-test"
    check_can_write([train_dir, test_dir, out / "zeroshot", out / "moeclip", out / "predict"], overwrite)
    console.rule("[bold]zsad demo: pipeline check on generated data, random weights")
    console.print(f"1/4 generating MVTec-layout data: training categories {', '.join(TRAIN_CATEGORIES)} in {train_dir}; "
                  f"unseen test categories {', '.join(TEST_CATEGORIES)} in {test_dir}")
    generate_mvtec_like(train_dir, categories=list(TRAIN_CATEGORIES), size=image_size, seed=0)
    generate_mvtec_like(test_dir, categories=list(TEST_CATEGORIES), size=image_size, seed=1)
    test_spec = f"mvtec:{test_dir}"
    tiny = {"backbone": TINY_MODEL_NAME, "weights": "random", "image_size": image_size}

    console.print("2/4 evaluating the training-free baseline (zeroshot) on the unseen categories")
    zeroshot = load("zeroshot", device=device, **tiny)
    results = {"zeroshot": run_test(zeroshot, test_spec, out / "zeroshot", save_maps=2, overwrite=True,
                                    show_progress=show_progress, meta=zeroshot.detector.provenance()).report["mean"]}

    console.print(f"3/4 training MoECLIP for {counted(epochs, 'epoch')} on the training categories, then evaluating it")
    torch_device = resolve_device(device)
    moeclip_model = build_detector("moeclip", **tiny, for_training=True)
    fit(moeclip_model, [f"mvtec:{train_dir}"], out / "moeclip" / "train", TrainingConfig(epochs=epochs, batch_size=4, lr=1e-3),
        ClassNames.load(), torch_device, overwrite=True, show_progress=show_progress)
    moeclip = Predictor(moeclip_model, torch_device, ClassNames.load())
    results["moeclip"] = run_test(moeclip, test_spec, out / "moeclip" / "test", save_maps=2, overwrite=True,
                                  show_progress=show_progress, meta=moeclip.detector.provenance()).report["mean"]

    console.print("4/4 predicting with the trained MoECLIP on a few unseen images (overlays, raw maps, scores.csv)")
    examples = sorted((test_dir / TEST_CATEGORIES[0] / "test").rglob("*.png"))[:6]
    predict_files(moeclip, examples, out / "predict", threshold=0.5, overwrite=True,
                  show_progress=show_progress, meta=moeclip.detector.provenance())

    table = Table(title="Mean over the unseen categories (RANDOM WEIGHTS: pipeline check, not a result)")
    table.add_column("method")
    for metric in SHOWN_METRICS:
        table.add_column(metric)
    for method, mean in results.items():
        table.add_row(method, *(format_percent(mean.get(metric)) for metric in SHOWN_METRICS))
    console.print(table)
    console.print(f"Reports: {out}/zeroshot/metrics.md, {out}/moeclip/test/metrics.md; "
                  f"training: {out}/moeclip/train; overlays: {out}/predict/overlays")
    return results
