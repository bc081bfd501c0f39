"""What a training run writes besides checkpoints: train_log.csv, its plot, the summary."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..fileio import atomic_save, atomic_write_text, csv_text
from ..viz import plot_curves

BASE_COLUMNS = ("epoch", "step", "lr", "total")


def read_train_log(path: Path) -> tuple[list[str], list[dict[str, float | None]]]:
    """-> (columns, rows); empty cells read as None."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = [{key: float(value) if value not in ("", None) else None for key, value in row.items()} for row in reader]
    return columns, rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # exact round trip
    return str(value)


class TrainLog:
    """train_log.csv, one row per logged step, flushed as it goes.

    Columns: epoch, step, lr, total, then the loss components in the order they first
    appeared. A component that shows up later extends the header (the file is rewritten
    once); a missing one leaves its cell empty. Resuming after step N keeps rows <= N.
    """

    def __init__(self, path: Path, resume_after_step: int | None = None):
        self.path = path
        self.columns: list[str] = []
        rows: list[dict[str, Any]] = []
        if resume_after_step is not None:
            self.columns, old_rows = read_train_log(path)
            rows = [row for row in old_rows if row["step"] is not None and row["step"] <= resume_after_step]
            rows = [{**row, "epoch": int(row["epoch"]), "step": int(row["step"])} for row in rows]
        self._rewrite(rows)

    def _rewrite(self, rows: Sequence[dict[str, Any]]) -> None:
        atomic_write_text(self.path, csv_text(self.columns, [self._cells(row) for row in rows]) if self.columns else "")
        self._handle = open(self.path, "a", newline="", encoding="utf-8")

    def write(self, epoch: int, step: int, lr: float, total: float, components: dict[str, float]) -> None:
        clash = set(components) & set(BASE_COLUMNS)
        if clash:
            raise ValueError(f"loss names {sorted(clash)} clash with the log's own columns {BASE_COLUMNS}")
        row = {"epoch": epoch, "step": step, "lr": lr, "total": total, **components}
        new_columns = [key for key in row if key not in self.columns]
        if new_columns:
            self._handle.close()
            _, old_rows = read_train_log(self.path)
            self.columns += new_columns
            self._rewrite([{**r, "epoch": int(r["epoch"]), "step": int(r["step"])} for r in old_rows])
        self._handle.write(csv_text(self.columns, [self._cells(row)]).split("\n", 1)[1])
        self._handle.flush()

    def _cells(self, row: dict[str, Any]) -> dict[str, str]:
        return {key: _cell(row.get(key)) for key in self.columns}

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "TrainLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_loss_curves(log_path: Path, png_path: Path) -> Path | None:
    """Plot every loss column of train_log.csv against the step (log scale when all
    values are positive). Returns None when the log has no rows."""
    columns, rows = read_train_log(log_path)
    if not rows:
        return None
    names = [c for c in columns if c not in ("epoch", "step", "lr")]
    steps = [row["step"] for row in rows]
    series = {name: [math.nan if row.get(name) is None else row[name] for row in rows] for name in names}
    values = [v for name in names for v in series[name] if not math.isnan(v)]
    positive = bool(values) and min(values) > 0
    return atomic_save(
        png_path,
        lambda tmp: plot_curves(series, tmp, "training losses", "step", "loss", x={n: steps for n in names}, log_y=positive),
    )


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(
    config: dict[str, Any],
    describe: dict[str, Any],
    parameter_counts: tuple[int, int],
    image_counts: dict[str, int],
    epoch_means: list[dict[str, float]],
    global_step: int,
    wall_time_s: float,
    unreadable: Sequence[str],
) -> str:
    """training_summary.md: what was trained on what, how long, and the per-epoch mean of
    every loss component. ``epoch_means`` rows hold epoch, steps, total and components."""
    trainable, total = parameter_counts
    lines = ["# Training summary", ""]
    if describe.get("random_weights"):
        lines += [
            "> **WARNING: RANDOM BACKBONE WEIGHTS.** This model was trained on a randomly initialised "
            "CLIP. It only shows that the pipeline runs; its scores and maps mean nothing.",
            "",
        ]
    lines += [
        f"- method: `{config['method']}`",
        f"- backbone: `{describe['model_name']}`, weights `{describe['weights']}`, input {describe['image_size']} px",
        f"- trainable parameters: {trainable:,} of {total:,} ({100.0 * trainable / max(total, 1):.2f} %)",
        f"- epochs: {len(epoch_means)}, optimiser steps: {global_step}",
        f"- wall time: {wall_time_s:.1f} s",
        f"- unreadable images skipped: {len(unreadable)}",
        "",
        "## Data",
        "",
        "| data set | split | images |",
        "|---|---|---:|",
    ]
    split = "test + train" if config["training"]["include_train_split"] else "test"
    lines += [f"| `{spec}` | {split} | {count} |" for spec, count in image_counts.items()]
    components: list[str] = []
    for row in epoch_means:
        components += [key for key in row if key not in ("epoch", "steps", *components)]
    columns = ["epoch", "steps", *components]
    lines += ["", "## Mean losses per epoch", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(key)) for key in columns) + " |" for row in epoch_means]
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    if unreadable:
        lines += ["## Unreadable images", ""] + [f"- `{path}`" for path in unreadable] + [""]
    return "\n".join(lines)
