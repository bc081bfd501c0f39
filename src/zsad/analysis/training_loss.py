"""Every run's training loss in one figure (MoECLIP Fig. 8: single expert against MoECLIP),
raw and smoothed, with the common convergence level and the step at which each run first
reaches it (see :mod:`.convergence`), and the values drawn as CSV rows."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..viz import new_figure
from .convergence import Convergence, LossCurve

__all__ = ["X_AXES", "epoch_positions", "training_loss_figure", "training_loss_rows", "x_values"]

X_AXES = ("step", "epoch")


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


def x_values(curve: LossCurve, x_axis: str) -> list[float]:
    """Where the curve's rows sit: the optimiser step, or the :func:`epoch_positions`."""
    if x_axis == "step":
        return [float(step) for step in curve.steps]
    if x_axis == "epoch":
        return epoch_positions(curve.epochs)
    raise ValueError(f"x_axis must be one of {X_AXES}, got {x_axis!r}")


def training_loss_rows(curves: Sequence[LossCurve], x_axis: str, loss: str) -> list[dict[str, Any]]:
    """The values drawn, one row per logged step: run, epoch, step, x, LOSS, LOSS_smoothed."""
    return [
        {"run": curve.label, "epoch": epoch, "step": step, "x": x, loss: value, f"{loss}_smoothed": smoothed}
        for curve in curves
        for epoch, step, x, value, smoothed in zip(curve.epochs, curve.steps, x_values(curve, x_axis), curve.values, curve.smoothed)
    ]


def training_loss_figure(curves: Sequence[LossCurve], result: Convergence, x_axis: str, loss: str):
    """One panel: run i's raw loss is ``axes.lines[2 i]`` (thin), its smoothed loss
    ``axes.lines[2 i + 1]``; then the level (dashed, grey); a dot where a run first reaches
    it (not drawn for a run that never does)."""
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot()
    for index, (curve, run) in enumerate(zip(curves, result.runs)):
        colour = f"C{index % 10}"
        x = x_values(curve, x_axis)
        axes.plot(x, curve.values, color=colour, linewidth=0.6, alpha=0.35)
        axes.plot(x, curve.smoothed, color=colour, linewidth=1.6, label=f"{curve.label} (smoothed)")
        if run.steps_to_level is not None:
            at = curve.steps.index(run.steps_to_level)
            axes.scatter([x[at]], [curve.smoothed[at]], color=colour, zorder=3, s=18)
    axes.axhline(result.level, color="0.4", linestyle="--", linewidth=1.0, label=f"level {result.level:.4g}")
    axes.set_xlabel("optimiser step" if x_axis == "step" else "epoch")
    axes.set_ylabel(f"{loss} loss")
    axes.set_title(f"Training loss ({loss}; smoothed: trailing mean over {result.window} steps)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, frameon=False)
    return figure
