"""`zsad benchmark --seeds` (mean ± std beside the overlay's own row), the reproducibility
manifest, config.json's sources, and `zsad train --monitor` (a curve that selects nothing)."""
from __future__ import annotations

import csv
import json
import math

from typer.testing import CliRunner

from zsad.cli import app
from zsad.data import build_dataset
from zsad.data.synth import generate_mvtec_like
from zsad.engine.benchmark_tables import seed_statistics
from zsad.engine.manifest import file_list_hash

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]
QUICK = ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2"]


def test_seed_statistics_are_the_mean_and_the_sample_std():
    runs = [{"mvtec": {"image_auroc": value, "pixel_ap": None, "n_errors": 1}} for value in (0.5, 0.7, 0.9)]
    mean, std = seed_statistics(runs)
    assert math.isclose(mean["mvtec"]["image_auroc"], 0.7) and math.isclose(std["mvtec"]["image_auroc"], 0.2)
    assert mean["mvtec"]["pixel_ap"] is None and mean["mvtec"]["n_errors"] == 3


def test_file_list_hash_ignores_the_folder_and_sees_a_changed_label(tmp_path):
    for name in ("a", "b"):
        generate_mvtec_like(tmp_path / name, categories=["tile"], size=32, n_good=1, n_defect_per_kind=1)
    first, second = (build_dataset(f"mvtec:{tmp_path / n}") for n in ("a", "b"))
    assert file_list_hash(first.samples, first.root) == file_list_hash(second.samples, second.root)
    relabelled = [s.__class__(s.image_path, 1 - s.label, s.mask_path, s.class_name) for s in first.samples]
    assert file_list_hash(relabelled, first.root) != file_list_hash(first.samples, first.root)


def test_benchmark_over_seeds_compares_an_overlay_with_its_own_row(tmp_path):
    generate_mvtec_like(tmp_path / "aux", categories=["stripes"], size=64, n_good=1, n_defect_per_kind=1)
    generate_mvtec_like(tmp_path / "visa", categories=["tile"], size=64, n_good=1, n_defect_per_kind=1, seed=1)
    out = tmp_path / "bench"
    result = runner.invoke(app, [
        "benchmark", "--config", "promptmoe-static-prompt", "--train", f"mvtec:{tmp_path / 'aux'}",
        "--test", f"mvtec:{tmp_path / 'visa'}", "--swap", "--seeds", "0,1", "--out", str(out), *QUICK, *TINY,
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["results_per_seed"]) == {"0", "1"}
    assert summary["paper_table"].startswith("PromptMoE Tab. 2, Static Prompt")
    assert summary["paper"]["mvtec"] == {"image_auroc": 0.917, "pixel_aupro": 0.82}  # the row, not Tab. 1's
    assert (out / "seed-0" / "main" / "train" / "model.safetensors").is_file() and (out / "seed-1" / "main").is_dir()
    manifest = summary["reproducibility"]
    assert manifest["seed"] == [0, 1] and manifest["checkpoint_rule"] == "last epoch"
    assert {"torch", "cuda", "cudnn", "device", "deterministic", "zsad_version", "git_commit"} <= set(manifest)
    assert [entry["role"] for entry in manifest["datasets"]] == ["train", "test", "train", "test"]
    assert all(entry["images"] > 0 and len(entry["file_list_sha256"]) == 64 for entry in manifest["datasets"])
    assert "mean ± std" in (out / "benchmark.md").read_text()


def test_train_records_sources_and_manifest_and_monitors_without_selecting(tmp_path):
    generate_mvtec_like(tmp_path / "aux", categories=["stripes"], size=64, n_good=1, n_defect_per_kind=1)
    generate_mvtec_like(tmp_path / "held", categories=["tile"], size=64, n_good=1, n_defect_per_kind=1, seed=1)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--method", "promptmoe", "--data", f"mvtec:{tmp_path / 'aux'}", "--out", str(run),
        "--monitor", f"mvtec:{tmp_path / 'held'}", "--epochs", "2", "--max-steps-per-epoch", "1", *TINY,
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["sources"]["training.batch_size"] == "recipe promptmoe"
    assert config["sources"]["training.epochs"] == "command line"
    assert config["training"]["batch_size"] == 16  # PromptMoE's recipe, not the engine default
    manifest = json.loads((run / "reproducibility.json").read_text())
    assert manifest["seed"] == 0 and manifest["datasets"][0]["split"] == "test"
    with (run / "monitor.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(float(row["epoch"])) for row in rows] == [1, 2] and "image_auroc" in rows[0]
    assert (run / "monitor_curve.png").is_file()
    assert "selected nothing" in (run / "training_summary.md").read_text()
