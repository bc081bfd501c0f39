"""WMoE-CLIP through the CLI: `zsad train` with the recipe, then `zsad test`, `zsad predict` and
`zsad analyze experts` on its checkpoint, and `zsad.load` of the run (tiny random backbone,
generated data)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import zsad
from zsad.checkpoints import read_checkpoint
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.run_folder import resolve_checkpoint
from zsad.engine.train_log import read_train_log

RECIPE = "wmoeclip"  # the bundled recipe, by name
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_train_test_predict_and_load(tmp_path):
    data = tmp_path / "mvtec"
    generate_mvtec_like(data, categories=["disc"], n_train=1, n_good=2, n_defect_per_kind=1, size=32)
    run = tmp_path / "run"
    trained = invoke("train", "--config", str(RECIPE), "--method", "wmoeclip", "--data", f"mvtec:{data}", "--out", str(run),
                     "--epochs", "1", "--batch-size", "2", "--max-steps-per-epoch", "2", *TINY)
    assert trained.exit_code == 0, trained.output
    _, stored = read_checkpoint(resolve_checkpoint(run))
    assert stored["method"] == "wmoeclip" and stored["training"]["lr"] == 1e-3
    columns, rows = read_train_log(run / "train_log.csv")
    assert {"focal", "dice", "bce", "kl", "rec", "balance"} <= set(columns) and len(rows) == 2

    tested = invoke("test", "--checkpoint", str(run), "--data", f"mvtec:{data}", "--out", str(tmp_path / "test"),
                    "--device", "cpu", "--quiet")
    assert tested.exit_code == 0, tested.output
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["method"] == "wmoeclip"

    image = next((data / "disc" / "test").rglob("*.png"))
    predicted = invoke("predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "predict"),
                       "--device", "cpu", "--quiet")
    assert predicted.exit_code == 0, predicted.output
    scores = json.loads((tmp_path / "predict" / "scores.json").read_text())
    assert scores["meta"]["method"] == "wmoeclip"

    detector = zsad.load(checkpoint=run, device="cpu")
    (prediction,) = detector.predict(image)
    assert 0.0 <= prediction.score <= 1.0 and prediction.anomaly_map.shape == (32, 32)

    analysed = invoke("analyze", "experts", "--checkpoint", str(run), "--data", f"mvtec:{data}", "--out",
                      str(tmp_path / "experts"), "--device", "cpu", "--quiet")
    assert analysed.exit_code == 0, analysed.output
    with open(tmp_path / "experts" / "expert_activation.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["layer"] == "context"]
    assert {row["pool"] for row in rows} == {"samoe"} and len(rows) == 8  # one decision per image, 8 experts
    images = int(rows[0]["images"])
    assert images == 6 and sum(int(row["activations"]) for row in rows) == 2 * images  # test split: 6 images; top-2
    assert sum(float(row["frequency"]) for row in rows) == pytest.approx(2.0)
