"""Training curves of PromptMoE runs in one figure (Fig. 7): both unweighted auxiliary
losses from each run's train_log.csv and, for a run trained with ``--monitor``, its image
AUROC per epoch from monitor.csv.

Runs are told apart by colour and labelled by folder name and beta (the L_decouple weight,
read from the run's config.json); as in the paper, a run without L_decouple (beta = 0) is
dashed, one with it solid. Losses are drawn against the epoch: the n rows logged in epoch e
sit at e - 1 + j / n (j = 1..n), so the epoch's last row lines up with the AUROC measured
after it. The monitored curve selects nothing: each run's model is its last epoch.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.monitor import MONITOR_CSV, read_monitor
from ..engine.run_folder import read_run_config
from ..engine.train_log import read_train_log
from ..errors import InvalidInputError, MissingInputError
from ..fileio import atomic_write_text, check_can_write
from ..viz import new_figure, save_figure

__all__ = [
    "RunCurves",
    "TrainingCurves",
    "curves_figure",
    "epoch_positions",
    "read_run_curves",
    "training_curves",
]

CURVES_CSV = "auxiliary_losses.csv"
CURVES_PNG = "auxiliary_losses.png"
AUROC_CSV = "monitor_auroc.csv"
AUXILIARY_COLUMNS = ("balance_unweighted", "decouple_unweighted")
MONITORED_METRIC = "image_auroc"
CURVE_NOTE = "The AUROC curves selected nothing: each run's model is its last epoch's."
PANEL_TITLES = {
    "decouple_unweighted": "L_decouple (unweighted)",
    "balance_unweighted": "L_balance (unweighted)",
    MONITORED_METRIC: "image AUROC (--monitor)",
}


@dataclass
class RunCurves:
    """One run's curves.

    label: the folder name (numbered when two runs share one); decouple_weight: beta from
    config.json (None when the run has no readable one); losses: loss column -> rows of
    (epoch, step, value); auroc: (epoch, image AUROC) rows of monitor.csv ([] without).
    """

    label: str
    decouple_weight: float | None
    losses: dict[str, list[tuple[int, int, float]]]
    auroc: list[tuple[int, float]]

    @property
    def legend(self) -> str:
        if self.decouple_weight is None:
            return f"{self.label} (beta unknown)"
        if self.decouple_weight == 0:
            return f"{self.label} (beta = 0: no L_decouple)"
        return f"{self.label} (beta = {self.decouple_weight:g})"

    @property
    def linestyle(self) -> str:
        """Dashed without L_decouple, solid with it (or unknown), as in Fig. 7."""
        return "--" if self.decouple_weight == 0 else "-"


@dataclass
class TrainingCurves:
    """What :func:`training_curves` wrote, the runs it read, and the labels of the runs
    without monitor.csv (drawn with their losses only)."""

    written: list[Path]
    runs: list[RunCurves]
    without_monitor: list[str]


def _decouple_weight(run: Path) -> float | None:
    config = read_run_config(run)
    value = ((config or {}).get("method_config") or {}).get("decouple_weight")
    return float(value) if isinstance(value, (int, float)) else None


def read_run_curves(run: Path, label: str) -> RunCurves:
    """Read one `zsad train` folder: its train_log.csv (needs at least one auxiliary-loss
    column), monitor.csv when present, and beta from config.json."""
    run = Path(run)
    log = run / "train_log.csv"
    columns, log_rows = read_train_log(log)
    if not log_rows:
        raise MissingInputError(f"no training log with rows at {log}")
    present = [name for name in AUXILIARY_COLUMNS if name in columns]
    if not present:
        raise InvalidInputError(f"{log} has none of the columns {', '.join(AUXILIARY_COLUMNS)} (not a routed PromptMoE run?)")
    losses = {
        name: [(int(row["epoch"]), int(row["step"]), row[name]) for row in log_rows if row.get(name) is not None]
        for name in present
    }
    auroc = [(int(row["epoch"]), row[MONITORED_METRIC]) for row in read_monitor(run / MONITOR_CSV) if MONITORED_METRIC in row]
    return RunCurves(label, _decouple_weight(run), losses, auroc)


def epoch_positions(epochs: Sequence[int]) -> list[float]:
    """x positions on an epoch axis of rows logged in ``epochs`` (non-decreasing, 1-based):
    the n rows of epoch e at e - 1 + j / n, j = 1..n."""
    counts: dict[int, int] = {}
    for epoch in epochs:
        counts[epoch] = counts.get(epoch, 0) + 1
    seen: dict[int, int] = {}
    positions = []
    for epoch in epochs:
        seen[epoch] = seen.get(epoch, 0) + 1
        positions.append(epoch - 1 + seen[epoch] / counts[epoch])
    return positions


def curves_figure(runs: Sequence[RunCurves]):
    """The Fig. 7 figure: a panel per auxiliary loss and, when any run has monitor.csv, a
    panel of image AUROC per epoch; one colour per run, dashed without L_decouple. In the
    AUROC panel the line of run i is ``axes.lines[i']`` for the runs with a curve, in order."""
    panels = [name for name in ("decouple_unweighted", "balance_unweighted") if any(name in run.losses for run in runs)]
    if any(run.auroc for run in runs):
        panels.append(MONITORED_METRIC)
    figure = new_figure(4.2 * len(panels) + 0.3, 3.6)
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    colours = [f"C{index % 10}" for index in range(len(runs))]
    for axes, panel in zip(axes_row, panels):
        for run, colour in zip(runs, colours):
            if panel == MONITORED_METRIC:
                if run.auroc:
                    epochs, values = zip(*run.auroc)
                    axes.plot(epochs, values, color=colour, linestyle=run.linestyle, marker="o", markersize=3, label=run.legend)
            elif panel in run.losses:
                rows = run.losses[panel]
                axes.plot(
                    epoch_positions([row[0] for row in rows]), [row[2] for row in rows],
                    color=colour, linestyle=run.linestyle, linewidth=1.2, label=run.legend,
                )
        axes.set_title(PANEL_TITLES[panel], fontsize=10)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    axes_row[0].legend(fontsize=7, frameon=False)
    title = "Training with and without L_decouple (dashed: beta = 0)"
    figure.suptitle(title + ("; the AUROC curve selects nothing" if MONITORED_METRIC in panels else ""), fontsize=10)
    return figure


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _unique_labels(runs: Sequence[Path]) -> list[str]:
    labels: list[str] = []
    for run in runs:
        name = Path(run).resolve().name
        label, number = name, 2
        while label in labels:
            label, number = f"{name}_{number}", number + 1
        labels.append(label)
    return labels


def training_curves(runs: Sequence[Path], out_dir: Path, overwrite: bool = False) -> TrainingCurves:
    """Write, for one or more runs: auxiliary_losses.csv (run, loss, epoch, step, value),
    auxiliary_losses.png (the :func:`curves_figure`) and, when any run has monitor.csv,
    monitor_auroc.csv (run, decouple_weight, epoch, image_auroc: the values drawn)."""
    out_dir = Path(out_dir)
    curves = [read_run_curves(run, label) for run, label in zip(runs, _unique_labels(runs))]
    monitored = any(run.auroc for run in curves)
    planned = [out_dir / CURVES_CSV, out_dir / CURVES_PNG] + ([out_dir / AUROC_CSV] if monitored else [])
    check_can_write(planned, overwrite)
    loss_rows = [
        {"run": run.label, "loss": name, "epoch": epoch, "step": step, "value": value}
        for run in curves for name, rows in run.losses.items() for epoch, step, value in rows
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        atomic_write_text(out_dir / CURVES_CSV, _csv(loss_rows, ["run", "loss", "epoch", "step", "value"])),
        save_figure(curves_figure(curves), out_dir / CURVES_PNG),
    ]
    if monitored:
        auroc_rows = [
            {
                "run": run.label,
                "decouple_weight": "" if run.decouple_weight is None else run.decouple_weight,
                "epoch": epoch,
                MONITORED_METRIC: value,
            }
            for run in curves
            for epoch, value in run.auroc
        ]
        written.append(atomic_write_text(out_dir / AUROC_CSV, _csv(auroc_rows, ["run", "decouple_weight", "epoch", MONITORED_METRIC])))
    return TrainingCurves(written, curves, [run.label for run in curves if not run.auroc])
