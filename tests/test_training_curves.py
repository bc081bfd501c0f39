"""PromptMoE Fig. 7: `zsad analyze losses` draws both auxiliary losses and, for runs trained
with --monitor, the image AUROC per epoch, in one figure (runs written by hand here)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from zsad.analysis.training_curves import (
    curves_figure,
    epoch_positions,
    read_run_curves,
    training_curves,
)
from zsad.cli import app
from zsad.engine.monitor import MONITOR_CSV
from zsad.engine.train_log import TrainLog


def _run(folder, decouple_weight, decouple, auroc=None, steps_per_epoch=2):
    """A run folder: train_log.csv with both unweighted losses, config.json with beta and,
    when ``auroc`` is given, monitor.csv with one image AUROC per epoch."""
    folder.mkdir(parents=True)
    config = {"method": "promptmoe", "method_config": {"decouple_weight": decouple_weight}, "training": {}, "data": {}}
    (folder / "config.json").write_text(json.dumps(config))
    log = TrainLog(folder / "train_log.csv")
    for step, value in enumerate(decouple, start=1):
        epoch = (step - 1) // steps_per_epoch + 1
        log.write(epoch, step, 1e-3, 1.0, {"bce": 0.7, "balance_unweighted": 1.0 + 0.1 * step, "decouple_unweighted": value})
    log.close()
    if auroc is not None:
        with open(folder / MONITOR_CSV, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "image_auroc", "pixel_auroc"])
            writer.writerows([epoch, value, 0.5] for epoch, value in enumerate(auroc, start=1))
    return folder


def test_epoch_positions_put_an_epochs_last_row_at_its_end():
    assert epoch_positions([1, 1, 2, 2]) == [0.5, 1.0, 1.5, 2.0]
    assert epoch_positions([1, 2, 2, 2]) == pytest.approx([1.0, 4 / 3, 5 / 3, 2.0])


def test_the_auroc_panel_draws_the_monitored_values_dashed_without_decoupling(tmp_path):
    with_decouple = _run(tmp_path / "pm", 0.005, [4.0, 3.0, 2.0, 1.0], auroc=[0.61, 0.72])
    without = _run(tmp_path / "pm-no-decouple", 0.0, [4.0, 4.5, 5.0, 5.5], auroc=[0.63, 0.58])
    runs = [read_run_curves(with_decouple, "pm"), read_run_curves(without, "pm-no-decouple")]
    figure = curves_figure(runs)
    decouple_axes, balance_axes, auroc_axes = figure.axes
    assert auroc_axes.get_title().startswith("image AUROC")
    for line, expected in zip(auroc_axes.lines, ([0.61, 0.72], [0.63, 0.58])):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2])
        np.testing.assert_array_equal(line.get_ydata(), expected)
    assert [line.get_linestyle() for line in auroc_axes.lines] == ["-", "--"]
    assert [line.get_label() for line in auroc_axes.lines] == ["pm (beta = 0.005)", "pm-no-decouple (beta = 0: no L_decouple)"]
    np.testing.assert_array_equal(decouple_axes.lines[1].get_ydata(), [4.0, 4.5, 5.0, 5.5])
    np.testing.assert_array_equal(decouple_axes.lines[1].get_xdata(), [0.5, 1.0, 1.5, 2.0])
    assert balance_axes.get_title().startswith("L_balance")


def test_the_written_auroc_csv_equals_each_runs_monitor_csv(tmp_path):
    _run(tmp_path / "a", 0.005, [1.0, 0.5, 0.25, 0.2], auroc=[0.5, 0.75])
    _run(tmp_path / "b", 0.0, [1.0, 1.5, 1.75, 2.0], auroc=[0.55, 0.6])
    result = training_curves([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert [path.name for path in result.written] == [
        "training_loss.csv", "training_loss.png", "convergence.md", "auxiliary_losses.csv", "auxiliary_losses.png", "monitor_auroc.csv",
    ]
    with open(result.written[-1], newline="") as handle:
        written = [
            (row["run"], float(row["decouple_weight"]), int(row["epoch"]), float(row["image_auroc"])) for row in csv.DictReader(handle)
        ]
    for run in ("a", "b"):
        with open(tmp_path / run / MONITOR_CSV, newline="") as handle:
            monitored = [(int(row["epoch"]), float(row["image_auroc"])) for row in csv.DictReader(handle)]
        assert [(epoch, value) for name, _, epoch, value in written if name == run] == monitored
    assert {(name, beta) for name, beta, _, _ in written} == {("a", 0.005), ("b", 0.0)}
    assert result.without_monitor == []


def test_analyze_losses_with_a_run_without_monitor_csv(tmp_path):
    monitored = _run(tmp_path / "with", 0.005, [1.0, 0.5], auroc=[0.7])
    plain = _run(tmp_path / "plain", 0.0, [1.0, 1.2])
    result = CliRunner().invoke(app, ["analyze", "losses", "--run", str(monitored), "--run", str(plain), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "selected nothing" in output and "last epoch" in output
    assert "No monitor.csv in plain (trained without --monitor): losses only" in output
    with open(tmp_path / "out" / "monitor_auroc.csv", newline="") as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == ["with"]

    alone = CliRunner().invoke(app, ["analyze", "losses", "--run", str(plain), "--out", str(tmp_path / "out2")])
    assert alone.exit_code == 0, alone.output
    assert "selected nothing" not in alone.output and "losses only" in alone.output
    assert sorted(path.name for path in (tmp_path / "out2").iterdir()) == [
        "auxiliary_losses.csv", "auxiliary_losses.png", "convergence.md", "training_loss.csv", "training_loss.png",
    ]
    assert len(curves_figure([read_run_curves(plain, "plain")]).axes) == 2
