"""Training curves of one or more `zsad train` runs, of any method.

For every run: its training loss (the ``total`` column of train_log.csv, or another loss
column) in one figure, raw and smoothed, and how many steps each run needs to reach a
common level of its smoothed loss relative to the first run (MoECLIP Fig. 8; definitions
in :mod:`.convergence`).

For PromptMoE runs also Fig. 7: both unweighted auxiliary losses from train_log.csv and,
for a run trained with ``--monitor``, its image AUROC per epoch from monitor.csv. Runs are
told apart by colour and labelled by folder name and beta (the L_decouple weight, read from
the run's config.json); as in the paper, a run without L_decouple (beta = 0) is dashed, one
with it solid. Losses are drawn against the epoch: the n rows logged in epoch e sit at
e - 1 + j / n (j = 1..n), so the epoch's last row lines up with the AUROC measured after
it. The monitored curve selects nothing: each run's model is its last epoch. Runs without
auxiliary losses (MoECLIP, WMoE-CLIP) are left out of that figure.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine.monitor import MONITOR_CSV, read_monitor
from ..engine.run_folder import read_run_config
from ..engine.train_log import read_train_log
from ..errors import InvalidInputError, MissingInputError
from ..fileio import atomic_write_text, check_can_write, csv_text
from ..viz import new_figure, save_figure
from .convergence import Convergence, LossCurve, convergence, convergence_lines
from .training_loss import epoch_positions, training_loss_figure, training_loss_rows

__all__ = [
    "DEFAULT_LOSS",
    "DEFAULT_SMOOTHING_STEPS",
    "DEFAULT_TOLERANCE",
    "RunCurves",
    "TrainingCurves",
    "batch_size_note",
    "curves_figure",
    "epoch_positions",
    "read_run_curves",
    "training_curves",
]

CURVES_CSV = "auxiliary_losses.csv"
CURVES_PNG = "auxiliary_losses.png"
AUROC_CSV = "monitor_auroc.csv"
LOSS_CSV = "training_loss.csv"
LOSS_PNG = "training_loss.png"
CONVERGENCE_MD = "convergence.md"
DEFAULT_LOSS = "total"
DEFAULT_SMOOTHING_STEPS = 50
DEFAULT_TOLERANCE = 0.05
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
    config.json (None when the run has no readable one); training_loss: rows of (epoch,
    step, value) of the training-loss column; losses: auxiliary-loss column -> rows of
    (epoch, step, value), empty for a method without them; auroc: (epoch, image AUROC) rows
    of monitor.csv ([] without); batch_size: from config.json (None without).
    """

    label: str
    decouple_weight: float | None
    training_loss: list[tuple[int, int, float]]
    losses: dict[str, list[tuple[int, int, float]]]
    auroc: list[tuple[int, float]]
    batch_size: int | None = None

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
    """What :func:`training_curves` wrote, the runs it read, their training-loss curves
    (as drawn) and convergence (the first run the reference), the labels of the runs
    without monitor.csv (drawn with their losses only) and of those without auxiliary
    losses (training loss only), and a note when the runs' batch sizes differ."""

    written: list[Path]
    runs: list[RunCurves]
    loss_curves: list[LossCurve]
    convergence: Convergence
    without_monitor: list[str]
    without_auxiliary: list[str]
    batch_size_note: str | None


def _decouple_weight(run: Path) -> float | None:
    config = read_run_config(run)
    value = ((config or {}).get("method_config") or {}).get("decouple_weight")
    return float(value) if isinstance(value, (int, float)) else None


def _batch_size(run: Path) -> int | None:
    value = ((read_run_config(run) or {}).get("training") or {}).get("batch_size")
    return value if isinstance(value, int) else None


def batch_size_note(runs: Sequence[RunCurves]) -> str | None:
    """A warning sentence when the runs' recorded batch sizes differ (their steps then see
    different numbers of images), else None."""
    sizes = {run.label: run.batch_size for run in runs if run.batch_size is not None}
    if len(set(sizes.values())) < 2:
        return None
    listed = ", ".join(f"{label}: {size}" for label, size in sizes.items())
    return f"The runs were trained with different batch sizes ({listed}): a step of each sees a different number of images."


def _column(log_rows: Sequence[dict[str, float | None]], name: str) -> list[tuple[int, int, float]]:
    return [(int(row["epoch"]), int(row["step"]), row[name]) for row in log_rows if row.get(name) is not None]


def read_run_curves(run: Path, label: str, loss: str = DEFAULT_LOSS) -> RunCurves:
    """Read one `zsad train` folder: its train_log.csv (needs the ``loss`` column; the
    auxiliary-loss columns when present), monitor.csv when present, and beta from
    config.json."""
    run = Path(run)
    log = run / "train_log.csv"
    columns, log_rows = read_train_log(log)
    if not log_rows:
        raise MissingInputError(f"no training log with rows at {log} (is {run} a `zsad train` output folder?)")
    if loss not in columns:
        losses = [name for name in columns if name not in ("epoch", "step", "lr")]
        raise InvalidInputError(f"{log} has no column {loss!r}; its loss columns: {', '.join(losses)}")
    auxiliary = {name: _column(log_rows, name) for name in AUXILIARY_COLUMNS if name in columns}
    auroc = [(int(row["epoch"]), row[MONITORED_METRIC]) for row in read_monitor(run / MONITOR_CSV) if MONITORED_METRIC in row]
    return RunCurves(label, _decouple_weight(run), _column(log_rows, loss), auxiliary, auroc, _batch_size(run))


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


def _unique_labels(runs: Sequence[Path]) -> list[str]:
    labels: list[str] = []
    for run in runs:
        name = Path(run).resolve().name
        label, number = name, 2
        while label in labels:
            label, number = f"{name}_{number}", number + 1
        labels.append(label)
    return labels


def _convergence_markdown(result: Convergence, loss: str, x_axis: str, note: str | None) -> str:
    lines = ["# Convergence", "", *convergence_lines(result, loss), ""] + ([note, ""] if note else [])
    lines += [
        "| run | final smoothed loss | steps to the level | epoch | steps / first run's |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in result.runs:
        reached = run.steps_to_level is not None
        lines.append(
            f"| {run.label} | {run.final_smoothed:.6g} | {run.steps_to_level if reached else 'not reached'} | "
            f"{run.epoch_at_level if reached else ''} | {'' if run.ratio_to_first is None else f'{run.ratio_to_first:.2f}'} |"
        )
    lines += ["", f"Figure: {LOSS_PNG} (x axis: {x_axis}); values: {LOSS_CSV}.", ""]
    return "\n".join(lines)


def training_curves(
    runs: Sequence[Path],
    out_dir: Path,
    overwrite: bool = False,
    loss: str = DEFAULT_LOSS,
    smoothing_steps: int = DEFAULT_SMOOTHING_STEPS,
    tolerance: float = DEFAULT_TOLERANCE,
    level: float | None = None,
    x_axis: str = "step",
) -> TrainingCurves:
    """Write, for one or more runs of any method: training_loss.png (every run's ``loss``
    column, raw and smoothed over ``smoothing_steps``, against ``x_axis``), training_loss.csv
    (run, epoch, step, x, LOSS, LOSS_smoothed: the values drawn) and convergence.md (steps to
    the common level, see :mod:`.convergence`). When a run has PromptMoE's auxiliary losses:
    auxiliary_losses.csv (run, loss, epoch, step, value) and auxiliary_losses.png (the
    :func:`curves_figure` of those runs). When any run has monitor.csv: monitor_auroc.csv
    (run, decouple_weight, epoch, image_auroc)."""
    out_dir = Path(out_dir)
    curves = [read_run_curves(run, label, loss) for run, label in zip(runs, _unique_labels(runs))]
    loss_curves = [LossCurve.from_rows(run.label, run.training_loss, smoothing_steps) for run in curves]
    result = convergence(loss_curves, tolerance=tolerance, level=level)
    note = batch_size_note(curves)
    auxiliary = [run for run in curves if run.losses]
    monitored = any(run.auroc for run in curves)
    planned = [out_dir / LOSS_CSV, out_dir / LOSS_PNG, out_dir / CONVERGENCE_MD]
    planned += [out_dir / CURVES_CSV, out_dir / CURVES_PNG] if auxiliary else []
    planned += [out_dir / AUROC_CSV] if monitored else []
    check_can_write(planned, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_columns = ["run", "epoch", "step", "x", loss, f"{loss}_smoothed"]
    written = [
        atomic_write_text(out_dir / LOSS_CSV, csv_text(loss_columns, training_loss_rows(loss_curves, x_axis, loss))),
        save_figure(training_loss_figure(loss_curves, result, x_axis, loss), out_dir / LOSS_PNG),
        atomic_write_text(out_dir / CONVERGENCE_MD, _convergence_markdown(result, loss, x_axis, note)),
    ]
    if auxiliary:
        loss_rows = [
            {"run": run.label, "loss": name, "epoch": epoch, "step": step, "value": value}
            for run in auxiliary for name, rows in run.losses.items() for epoch, step, value in rows
        ]
        written += [
            atomic_write_text(out_dir / CURVES_CSV, csv_text(["run", "loss", "epoch", "step", "value"], loss_rows)),
            save_figure(curves_figure(auxiliary), out_dir / CURVES_PNG),
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
        written.append(atomic_write_text(out_dir / AUROC_CSV, csv_text(["run", "decouple_weight", "epoch", MONITORED_METRIC], auroc_rows)))
    return TrainingCurves(
        written, curves, loss_curves, result,
        without_monitor=[run.label for run in curves if not run.auroc],
        without_auxiliary=[run.label for run in curves if not run.losses],
        batch_size_note=note,
    )
