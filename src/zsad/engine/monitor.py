"""``--monitor KIND:PATH``: evaluate after each epoch, for a curve only (PromptMoE Fig. 7).

The numbers go to OUT/monitor.csv and OUT/monitor_curve.png. They select nothing: the
run's model stays the last epoch's (the papers' protocol; choosing the best epoch on a
test set would leak it), and the run's summary says so.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import build_dataset
from ..methods.base import AnomalyDetector
from ..text import ClassNames
from .evaluation import evaluate

MONITOR_CSV = "monitor.csv"
MONITOR_PLOT = "monitor_curve.png"
MONITOR_NOTE = "The monitored curve selected nothing: the model is the last epoch's."
# The metrics drawn (Fig. 7 plots image AUROC); every mean metric is kept in the csv.
PLOTTED = ("image_auroc", "pixel_auroc", "pixel_aupro")

Monitor = Callable[[int, AnomalyDetector], dict[str, float]]


def dataset_monitor(spec: str, class_names: ClassNames, device: torch.device, batch_size: int = 8) -> Monitor:
    """A monitor that evaluates the detector on ``spec``'s test split (means over its
    classes). The data set is listed once, here, so a bad path fails before training."""
    datasets = {0: build_dataset(spec, split="test")}

    def measure(epoch: int, detector: AnomalyDetector) -> dict[str, float]:
        size = detector.backbone.image_size
        if size not in datasets:
            datasets[size] = build_dataset(spec, image_size=size, split="test")
        dataset = datasets[size]
        was_training = detector.training
        try:
            with torch.no_grad():
                result = evaluate(detector, dataset, class_names, device, batch_size=batch_size, show_progress=False)
        finally:
            detector.train(was_training)
        return {key: float(value) for key, value in result.report["mean"].items() if isinstance(value, (int, float))}

    return measure


def record_monitor(out_dir: Path, epoch: int, monitor: Monitor, detector: AnomalyDetector) -> dict[str, float]:
    """Run ``monitor`` after ``epoch``, append its numbers to monitor.csv (one row per
    epoch; a resumed run appends) and redraw monitor_curve.png."""
    values = monitor(epoch, detector)
    path = out_dir / MONITOR_CSV
    rows = read_monitor(path)
    rows = [row for row in rows if int(row["epoch"]) < epoch] + [{"epoch": epoch, **values}]
    keys = ["epoch", *sorted({key for row in rows for key in row if key != "epoch"})]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    plot_monitor([(out_dir.name, rows)], out_dir / MONITOR_PLOT)
    return values


def read_monitor(path: Path) -> list[dict[str, float]]:
    """The rows of a monitor.csv ([] when there is none)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def plot_monitor(runs: list[tuple[str, list[dict[str, float]]]], out: Path, metric: str = "image_auroc") -> None:
    """One line per run of ``metric`` against the epoch (Fig. 7: with and without
    L_decouple, given as two runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    for label, rows in runs:
        points = [(row["epoch"], row[metric]) for row in rows if metric in row]
        if points:
            epochs, values = zip(*points)
            axis.plot(epochs, values, marker="o", label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric.replace("_", " "))
    axis.set_title(f"{metric} per epoch (selects nothing)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
