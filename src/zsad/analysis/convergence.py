"""How fast training runs converge, relative to the first: the step at which each run's
smoothed loss first reaches one common level.

Definitions (the MoECLIP paper's "converges 1.3x faster", App. D / Fig. 8, is not defined
there; these are zsad's):

- smoothed loss at logged step s: the mean of the logged values at steps in
  (s - window, s] (a trailing mean over ``window`` optimiser steps; the first rows of a run
  average what is logged so far);
- level: given, or derived from the highest final smoothed loss L_end among the runs (the
  slowest run's end) as L_end + tolerance * |L_end|;
- steps to the level: the first logged step whose smoothed loss is <= the level, or None
  ("not reached");
- ratio of run i: its steps / the first run's steps ("run i needs 1.30x the steps of the
  first run"); None when either did not reach the level.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError

__all__ = [
    "PAPER_NOTE",
    "Convergence",
    "LossCurve",
    "RunConvergence",
    "convergence",
    "convergence_lines",
    "first_step_at_or_below",
    "trailing_mean",
]

PAPER_NOTE = (
    'The MoECLIP paper (App. D, Fig. 8) does not define its "converges 1.3x faster"; '
    "this ratio is zsad's definition, not necessarily the paper's."
)


def trailing_mean(steps: Sequence[int], values: Sequence[float], window: int) -> list[float]:
    """Mean of the values logged at steps in (s - window, s] for each logged step s.

    steps: increasing optimiser steps of the logged rows; values: the loss at each; window:
    in optimiser steps (>= 1), so runs logged every step and every N steps smooth alike.
    """
    if window < 1:
        raise InvalidInputError(f"the smoothing window must be >= 1 step, got {window}")
    if len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps for {len(values)} values")
    smoothed = []
    start = 0
    running = 0.0
    for end, step in enumerate(steps):
        running += values[end]
        while steps[start] <= step - window:
            running -= values[start]
            start += 1
        smoothed.append(running / (end - start + 1))
    return smoothed


def first_step_at_or_below(steps: Sequence[int], smoothed: Sequence[float], level: float) -> int | None:
    """The first step whose smoothed loss is <= level; None when there is none."""
    return next((step for step, value in zip(steps, smoothed) if value <= level), None)


@dataclass
class RunConvergence:
    """One run: its final smoothed loss, the step (and that row's epoch) at which it first
    reaches the level (None: not reached), and its steps relative to the first run's."""

    label: str
    final_smoothed: float
    steps_to_level: int | None
    epoch_at_level: int | None
    ratio_to_first: float | None


@dataclass
class Convergence:
    """The level, how it was set (``level_source``: a sentence), and one row per run."""

    window: int
    tolerance: float | None
    level: float
    level_source: str
    runs: list[RunConvergence]


@dataclass
class LossCurve:
    """One run's logged loss: rows (epoch, step, value) in step order, and the same values
    smoothed by :func:`trailing_mean` over ``window`` steps."""

    label: str
    epochs: list[int]
    steps: list[int]
    values: list[float]
    window: int
    smoothed: list[float]

    @classmethod
    def from_rows(cls, label: str, rows: Sequence[tuple[int, int, float]], window: int) -> LossCurve:
        epochs, steps, values = (list(column) for column in zip(*rows)) if rows else ([], [], [])
        return cls(label, epochs, steps, values, window, trailing_mean(steps, values, window))


def convergence(runs: Sequence[LossCurve], tolerance: float = 0.05, level: float | None = None) -> Convergence:
    """Steps each run needs to reach a common level of its smoothed loss.

    runs: the curves, all smoothed over one window (the first run is the reference);
    level: None derives it from the highest final smoothed loss and ``tolerance`` (>= 0),
    see the module docstring.
    """
    if not runs or any(not run.steps for run in runs):
        raise InvalidInputError("convergence needs at least one run, each with logged steps")
    if len({run.window for run in runs}) != 1:
        raise ValueError(f"runs smoothed over different windows: {sorted({run.window for run in runs})}")
    if level is None:
        if tolerance < 0:
            raise InvalidInputError(f"the tolerance must be >= 0 (a level above the slowest run's end), got {tolerance}")
        slowest = max(runs, key=lambda run: run.smoothed[-1])
        end = slowest.smoothed[-1]
        level = end + tolerance * abs(end)
        source = f"the highest final smoothed loss, {end:.6g} ({slowest.label}), x (1 + {tolerance * 100:g} %)"
    else:
        tolerance = None
        source = "given (--level)"
    reached = []
    for run in runs:
        step = first_step_at_or_below(run.steps, run.smoothed, level)
        epoch = None if step is None else run.epochs[run.steps.index(step)]
        reached.append((run, step, epoch))
    reference = reached[0][1]
    rows = [
        RunConvergence(
            run.label, run.smoothed[-1], step, epoch,
            None if step is None or reference is None else step / reference,
        )
        for run, step, epoch in reached
    ]
    return Convergence(runs[0].window, tolerance, level, source, rows)


def convergence_lines(result: Convergence, loss: str = "total") -> list[str]:
    """The report as plain lines: the definition, one line per run, the paper note."""
    first = result.runs[0].label
    lines = [
        f"Convergence: the first step at which each run's smoothed {loss} loss (trailing mean over "
        f"{result.window} steps) is <= {result.level:.6g}; level = {result.level_source}.",
    ]
    for index, run in enumerate(result.runs):
        if run.steps_to_level is None:
            lines.append(f"- {run.label}: not reached (its smoothed loss ends at {run.final_smoothed:.6g})")
            continue
        where = f"- {run.label}: step {run.steps_to_level} (epoch {run.epoch_at_level})"
        if index == 0:
            lines.append(where + "; the reference")
        elif run.ratio_to_first is None:
            lines.append(where + f"; no ratio ({first} did not reach the level)")
        else:
            lines.append(where + f"; needs {run.ratio_to_first:.2f}x the steps of {first}")
    lines.append(PAPER_NOTE)
    return lines
