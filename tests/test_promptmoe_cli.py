"""PromptMoE through every entry point: `zsad train`, `test`, `predict`, `benchmark`,
`analyze experts`, `analyze losses` and `zsad.load`, on the tiny backbone and generated data."""
from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

import zsad
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.benchmark import paper_results
from zsad.engine.train_log import read_train_log

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]
DEVICE = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["disc", "tile"], n_train=1, n_good=2, n_defect_per_kind=1, size=32)
    return root


@pytest.fixture(scope="module")
def run(tree, tmp_path_factory):
    """A PromptMoE run trained for two one-step epochs."""
    out = tmp_path_factory.mktemp("runs") / "promptmoe"
    result = runner.invoke(app, [
        "train", "--method", "promptmoe", "--data", f"mvtec:{tree}", "--out", str(out), "--epochs", "2",
        "--max-steps-per-epoch", "1", "--batch-size", "2", *TINY,
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_train_logs_every_loss_and_both_unweighted_auxiliary_losses(run):
    stored = json.loads((run / "config.json").read_text())
    assert stored["method"] == "promptmoe" and stored["method_config"]["num_experts"] == 8
    columns, rows = read_train_log(run / "train_log.csv")
    for column in ("bce", "focal", "dice", "balance", "decouple", "balance_unweighted", "decouple_unweighted"):
        assert column in columns, column
    assert len(rows) == 2
    # The total is the sum of the optimised losses only, not of the monitors.
    row = rows[0]
    assert row["total"] == pytest.approx(sum(row[name] for name in ("bce", "focal", "dice", "balance", "decouple")))


def test_test_predict_and_load_accept_the_checkpoint(run, tree, tmp_path):
    tested = runner.invoke(app, ["test", "--checkpoint", str(run), "--data", f"mvtec:{tree}", "--out", str(tmp_path / "t"), *DEVICE])
    assert tested.exit_code == 0, tested.output
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["method"] == "promptmoe"
    image = tree / "tile" / "test" / "good" / "000.png"
    predicted = runner.invoke(app, ["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "p"), *DEVICE])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads((tmp_path / "p" / "scores.json").read_text())["meta"]["method"] == "promptmoe"
    detector = zsad.load(checkpoint=run, device="cpu", class_name="tile")
    prediction = detector.predict(image)[0]
    assert 0 <= prediction.score <= 1 and prediction.anomaly_map.shape == (32, 32)


def test_analyze_experts_writes_activation_frequencies_per_pool_and_data_set(run, tree, tmp_path):
    out = tmp_path / "experts"
    result = runner.invoke(app, [
        "analyze", "experts", "--checkpoint", str(run), "--data", f"mvtec:{tree}", "--data", f"mvtec:{tree}",
        "--out", str(out), *DEVICE,
    ])
    assert result.exit_code == 0, result.output
    with open(out / "expert_activation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["dataset"] for row in rows} == {"mvtec", "mvtec_2"}
    assert {row["pool"] for row in rows} == {"normal", "abnormal"}
    images = len(list(tree.glob("*/test/*/*.png")))
    for dataset in ("mvtec", "mvtec_2"):
        for pool in ("normal", "abnormal"):
            selected = [r for r in rows if r["dataset"] == dataset and r["pool"] == pool and r["layer"] == "all"]
            assert len(selected) == 8
            assert all(int(r["images"]) == images for r in selected)
            # Every image keeps k = 4 experts in each of the 4 layers' pools.
            assert sum(int(r["activations"]) for r in selected) == 4 * 4 * images
    assert (out / "expert_activation.png").is_file() and (out / "expert_activation.json").is_file()


def test_analyze_losses_draws_the_auxiliary_curves_of_runs(run, tmp_path):
    out = tmp_path / "curves"
    result = runner.invoke(app, ["analyze", "losses", "--run", str(run), "--run", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "auxiliary_losses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["loss"] for row in rows} == {"balance_unweighted", "decouple_unweighted"}
    assert len(rows) == 2 * 2 * 2  # runs x losses x steps
    assert (out / "auxiliary_losses.png").is_file()


def test_benchmark_puts_the_published_promptmoe_numbers_beside_ours(tmp_path):
    generate_mvtec_like(tmp_path / "aux", categories=["stripes"], size=32, n_good=1, n_defect_per_kind=1)
    generate_mvtec_like(tmp_path / "target", categories=["tile"], size=32, n_good=1, n_defect_per_kind=1, seed=1)
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "benchmark", "--method", "promptmoe", "--train", f"mvtec:{tmp_path / 'aux'}",
        "--test", f"mpdd:{tmp_path / 'target'}",  # MPDD is read from the MVTec layout
        "--out", str(out), "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2", *TINY,
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["method"] == "promptmoe" and set(summary["results"]) == {"mpdd"}
    assert summary["paper"] == {"mpdd": paper_results("promptmoe")["mpdd"]}
    assert summary["results"]["mpdd"]["pixel_aupro"] is not None
    markdown = (out / "benchmark.md").read_text()
    assert "Pixel AUPRO" in markdown and "88.8" in markdown  # the paper's MPDD PRO


def test_paper_table_holds_fractions_of_promptmoe_tab_1():
    paper = paper_results("promptmoe")
    assert paper["mvtec"] == {"image_auroc": 0.938, "image_ap": 0.972, "pixel_auroc": 0.918, "pixel_aupro": 0.832}
    assert paper["clinicdb"] == {"pixel_auroc": 0.845, "pixel_aupro": 0.709}
    assert all(0 < value <= 1 for row in paper.values() for value in row.values())
