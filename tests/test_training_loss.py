"""MoECLIP Fig. 8: `zsad analyze losses` draws every run's training loss in one figure and
reports how many steps each run's smoothed loss needs to reach a common level (run
folders written by hand, plus one tiny real MoECLIP training run)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from zsad.analysis.convergence import LossCurve, convergence, first_step_at_or_below, trailing_mean
from zsad.analysis.training_curves import read_run_curves, training_curves
from zsad.analysis.training_loss import epoch_positions, training_loss_figure
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.train_log import TrainLog
from zsad.errors import InvalidInputError

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]


def _moeclip_run(folder, totals, steps_per_epoch=10, log_every=1, batch_size=2):
    """A MoECLIP-like run folder: train_log.csv with ``total`` and MoECLIP's components (no
    auxiliary-loss monitors), logged every ``log_every`` steps."""
    folder.mkdir(parents=True)
    config = {"method": "moeclip", "method_config": {}, "training": {"batch_size": batch_size}, "data": {}}
    (folder / "config.json").write_text(json.dumps(config))
    with TrainLog(folder / "train_log.csv") as log:
        for step, total in enumerate(totals, start=1):
            if step % log_every == 0:
                parts = {"focal": 0.5 * total, "dice": 0.3 * total, "etf": 0.1 * total, "balance": 0.1 * total}
                log.write((step - 1) // steps_per_epoch + 1, step, 5e-4, total, parts)
    return folder


def _slow_trailing_mean(steps, values, window):
    return [np.mean([v for t, v in zip(steps, values) if s - window < t <= s]) for s in steps]


def test_trailing_mean_equals_the_mean_over_the_last_window_steps():
    rng = np.random.default_rng(0)
    steps = sorted(rng.choice(np.arange(1, 400), size=120, replace=False).tolist())  # gaps, like --log-every
    values = rng.normal(size=120).tolist()
    for window in (1, 3, 17, 1000):
        np.testing.assert_allclose(trailing_mean(steps, values, window), _slow_trailing_mean(steps, values, window), rtol=1e-12)
    assert trailing_mean([1, 2, 3], [3.0, 1.0, 2.0], 1) == [3.0, 1.0, 2.0]
    with pytest.raises(InvalidInputError, match=">= 1 step"):
        trailing_mean([1], [1.0], 0)


def test_convergence_steps_of_two_exponential_decays_equal_the_hand_computation():
    """L_A(s) = exp(-a s) and L_B(s) = exp(-b s), b = a / 1.3: for s >= W the trailing mean
    over W steps is c exp(-r s), c = (1/W) sum_k exp(r k), so the first step at or below a
    level is ceil(ln(c / level) / r)."""
    a, n, window, tolerance = 0.01, 2000, 50, 0.05
    b = a / 1.3
    steps = list(range(1, n + 1))

    def curve(label, rate):
        rows = [((s - 1) // 100 + 1, s, math.exp(-rate * s)) for s in steps]
        return LossCurve.from_rows(label, rows, window)

    def c(rate):
        return sum(math.exp(rate * k) for k in range(window)) / window

    fast, slow = curve("A", a), curve("B", b)
    result = convergence([fast, slow], tolerance=tolerance)
    level = c(b) * math.exp(-b * n) * (1 + tolerance)  # B ends higher: its final smoothed loss sets the level
    assert result.level == pytest.approx(level, rel=1e-12)
    expected_a = math.ceil(math.log(c(a) / level) / a)
    expected_b = math.ceil(math.log(c(b) / level) / b)
    assert min(expected_a, expected_b) >= window  # the closed form holds there
    assert [run.steps_to_level for run in result.runs] == [expected_a, expected_b]
    assert result.runs[1].ratio_to_first == pytest.approx(expected_b / expected_a)
    assert result.runs[1].ratio_to_first == pytest.approx(1.3, rel=0.03)  # the rates' ratio, up to the level's offset
    assert result.runs[1].epoch_at_level == (expected_b - 1) // 100 + 1


def test_a_run_that_never_reaches_the_level_is_not_reached(tmp_path):
    fast = _moeclip_run(tmp_path / "fast", [2.0 * 0.9**s for s in range(60)])
    flat = _moeclip_run(tmp_path / "flat", [1.0 + 0.001 * (s % 2) for s in range(60)])
    result = training_curves([fast, flat], tmp_path / "out", smoothing_steps=5, level=0.5)
    runs = result.convergence.runs
    assert runs[0].steps_to_level == first_step_at_or_below(result.loss_curves[0].steps, result.loss_curves[0].smoothed, 0.5)
    assert runs[1].steps_to_level is None and runs[1].ratio_to_first is None
    report = (tmp_path / "out" / "convergence.md").read_text()
    assert "| flat | " in report and "not reached" in report
    assert "does not define" in report  # the paper's 1.3x

    # the reference itself not reaching the level leaves every ratio undefined
    cli = runner.invoke(app, ["analyze", "losses", "--run", str(flat), "--run", str(fast), "--out", str(tmp_path / "o2"),
                              "--smooth-steps", "5", "--level", "0.5"])
    assert cli.exit_code == 0, cli.output
    output = " ".join(cli.output.split())
    assert "- flat: not reached" in output and "no ratio (flat did not reach the level)" in output


def test_plotted_series_equal_the_csv_and_the_csv_equals_train_log(tmp_path):
    a = _moeclip_run(tmp_path / "moeclip", [1.0 / (1 + 0.2 * s) for s in range(40)])
    b = _moeclip_run(tmp_path / "single", [1.2 / (1 + 0.1 * s) for s in range(0, 80, 2)], log_every=2)
    for x_axis in ("step", "epoch"):
        out = tmp_path / f"out-{x_axis}"
        result = training_curves([a, b], out, smoothing_steps=4, x_axis=x_axis)
        with open(out / "training_loss.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        figure = training_loss_figure(result.loss_curves, result.convergence, x_axis, "total")
        axes = figure.axes[0]
        for index, run in enumerate(("moeclip", "single")):
            mine = [row for row in rows if row["run"] == run]
            raw, smoothed = axes.lines[2 * index], axes.lines[2 * index + 1]
            np.testing.assert_array_equal(raw.get_xdata(), [float(row["x"]) for row in mine])
            np.testing.assert_array_equal(raw.get_ydata(), [float(row["total"]) for row in mine])
            np.testing.assert_array_equal(smoothed.get_ydata(), [float(row["total_smoothed"]) for row in mine])
            with open(tmp_path / run / "train_log.csv", newline="") as handle:
                logged = [(int(r["epoch"]), int(r["step"]), float(r["total"])) for r in csv.DictReader(handle)]
            assert [(int(r["epoch"]), int(r["step"]), float(r["total"])) for r in mine] == logged
            steps = [step for _, step, _ in logged]
            np.testing.assert_allclose([float(r["total_smoothed"]) for r in mine],
                                       _slow_trailing_mean(steps, [v for *_, v in logged], 4), rtol=1e-12)
            expected_x = steps if x_axis == "step" else epoch_positions([epoch for epoch, _, _ in logged])
            np.testing.assert_array_equal([float(r["x"]) for r in mine], expected_x)
        assert axes.lines[4].get_ydata()[0] == pytest.approx(result.convergence.level)  # the level line


def test_moeclip_runs_get_the_training_loss_figure_and_no_auxiliary_one(tmp_path):
    a = _moeclip_run(tmp_path / "moeclip", [math.exp(-0.05 * s) for s in range(100)])
    b = _moeclip_run(tmp_path / "single", [math.exp(-0.03 * s) for s in range(100)])
    result = runner.invoke(app, ["analyze", "losses", "--run", str(a), "--run", str(b), "--out", str(tmp_path / "out"),
                                 "--smooth-steps", "1"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "No auxiliary losses (PromptMoE's L_balance / L_decouple) in moeclip, single: training loss only" in output
    assert "- moeclip: step" in output and "the steps of moeclip" in output and "does not define" in output
    assert "monitor.csv" not in output and "batch sizes" not in output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["convergence.md", "training_loss.csv", "training_loss.png"]


def test_a_missing_loss_column_is_one_clear_error(tmp_path):
    run = _moeclip_run(tmp_path / "run", [1.0, 0.9])
    with pytest.raises(InvalidInputError, match="no column 'ce'; its loss columns: total, focal, dice, etf, balance"):
        read_run_curves(run, "run", loss="ce")
    assert read_run_curves(run, "run", loss="focal").training_loss == [(1, 1, 0.5), (1, 2, 0.45)]


def test_a_tiny_real_moeclip_run_gives_the_figure(tmp_path):
    generate_mvtec_like(tmp_path / "data", categories=["stripes"], size=32, n_good=2, n_defect_per_kind=1)
    runs = []
    for name, config in (("moeclip", "moeclip"), ("single", "moeclip-single-expert")):
        out = tmp_path / name
        trained = runner.invoke(app, ["train", "--config", config, "--data", f"mvtec:{tmp_path / 'data'}", "--out", str(out),
                                      "--epochs", "2", "--max-steps-per-epoch", "2", "--batch-size", "2", *TINY])
        assert trained.exit_code == 0, trained.output
        runs += ["--run", str(out)]
    result = runner.invoke(app, ["analyze", "losses", *runs, "--out", str(tmp_path / "fig8"), "--smooth-steps", "2"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "fig8" / "training_loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["run"], row["step"]) for row in rows] == [(run, str(step)) for run in ("moeclip", "single") for step in (1, 2, 3, 4)]
    assert (tmp_path / "fig8" / "training_loss.png").stat().st_size > 0
    assert "training loss only" in " ".join(result.output.split())


def test_runs_of_different_batch_sizes_are_flagged(tmp_path):
    a = _moeclip_run(tmp_path / "a", [1.0, 0.5, 0.25])
    b = _moeclip_run(tmp_path / "b", [1.0, 0.8, 0.6], batch_size=8)
    result = runner.invoke(app, ["analyze", "losses", "--run", str(a), "--run", str(b), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    note = "The runs were trained with different batch sizes (a: 2, b: 8)"
    assert note in " ".join(result.output.split())
    assert note in (tmp_path / "out" / "convergence.md").read_text()


def test_a_promptmoe_and_a_moeclip_run_together(tmp_path):
    """Both get the training loss; only the PromptMoE run is in the auxiliary-loss figure."""
    moeclip = _moeclip_run(tmp_path / "moeclip", [1.0, 0.5, 0.25, 0.2])
    promptmoe = tmp_path / "promptmoe"
    promptmoe.mkdir()
    config = {"method": "promptmoe", "method_config": {"decouple_weight": 0.005}, "training": {"batch_size": 2}, "data": {}}
    (promptmoe / "config.json").write_text(json.dumps(config))
    with TrainLog(promptmoe / "train_log.csv") as log:
        for step, total in enumerate([2.0, 1.5, 1.0, 0.9], start=1):
            log.write(1, step, 1e-3, total, {"bce": total, "balance_unweighted": 1.0, "decouple_unweighted": 0.5 / step})
    result = training_curves([moeclip, promptmoe], tmp_path / "out", smoothing_steps=1)
    assert result.without_auxiliary == ["moeclip"]
    with open(tmp_path / "out" / "auxiliary_losses.csv", newline="") as handle:
        assert {row["run"] for row in csv.DictReader(handle)} == {"promptmoe"}
    with open(tmp_path / "out" / "training_loss.csv", newline="") as handle:
        totals = [(row["run"], float(row["total"])) for row in csv.DictReader(handle)]
    assert totals == [("moeclip", v) for v in (1.0, 0.5, 0.25, 0.2)] + [("promptmoe", v) for v in (2.0, 1.5, 1.0, 0.9)]
    # level 0.9 x 1.05 = 0.945 (promptmoe ends higher): moeclip reaches it at step 2, promptmoe at 4
    assert [run.steps_to_level for run in result.convergence.runs] == [2, 4]
    assert result.convergence.runs[1].ratio_to_first == 2.0
