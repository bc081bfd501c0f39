"""`zsad benchmark`: one command trains, tests every set, and writes the comparison."""
from __future__ import annotations

import json

import torch
from data_factories import FIXTURES
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.benchmark import paper_results

runner = CliRunner()
CLINICDB = FIXTURES / "cvc-clinicdb"


def test_paper_table_holds_fractions_of_tab_1():
    paper = paper_results("moeclip")
    assert paper["mvtec"] == {"image_auroc": 0.939, "image_ap": 0.968, "pixel_auroc": 0.925, "pixel_ap": 0.457}
    assert "brainmri" not in paper  # the paper's Brain MRI is BMAD's, not the Kaggle set
    assert all(0 < value <= 1 for row in paper.values() for value in row.values())


def test_benchmark_trains_once_tests_each_set_and_swaps(tmp_path):
    generate_mvtec_like(tmp_path / "aux", categories=["stripes"], size=64, n_good=1, n_defect_per_kind=1)
    generate_mvtec_like(tmp_path / "target", categories=["tile"], size=64, n_good=1, n_defect_per_kind=1, seed=1)
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "benchmark", "--method", "moeclip", "--train", f"mvtec:{tmp_path / 'aux'}",
        "--test", f"mvtec:{tmp_path / 'target'},clinicdb:{CLINICDB}", "--out", str(out),
        "--swap", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "2",
        "--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "benchmark.json").read_text())
    assert set(summary["results"]) == {"mvtec", "mvtec-2", "clinicdb"}  # train set (swap), target, clinicdb
    assert summary["pipeline_check"] is True and summary["swap_train"].startswith("mvtec:")
    assert summary["paper"]["clinicdb"] == {"pixel_auroc": 0.897, "pixel_ap": 0.499}
    assert summary["results"]["clinicdb"]["image_auroc"] is None
    assert (out / "main" / "train" / "model.safetensors").is_file()
    assert (out / "swap" / "train" / "model.safetensors").is_file()
    markdown = (out / "benchmark.md").read_text()
    assert "89.7" in markdown and "clinicdb" in markdown


def test_benchmark_repeats_exactly_with_the_same_seed(tmp_path):
    generate_mvtec_like(tmp_path / "aux", categories=["stripes"], size=32, n_good=1, n_defect_per_kind=1)
    generate_mvtec_like(tmp_path / "target", categories=["tile"], size=32, n_good=1, n_defect_per_kind=1, seed=1)
    results = []
    for run in ("a", "b"):
        torch.manual_seed(len(results))  # another global RNG state before each run
        result = runner.invoke(app, [
            "benchmark", "--method", "moeclip", "--train", f"mvtec:{tmp_path / 'aux'}", "--test", f"mvtec:{tmp_path / 'target'}",
            "--out", str(tmp_path / run), "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "2", "--seed", "3",
            "--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet",
        ])
        assert result.exit_code == 0, result.output
        results.append(json.loads((tmp_path / run / "benchmark.json").read_text())["results"])
    assert results[0] == results[1]
