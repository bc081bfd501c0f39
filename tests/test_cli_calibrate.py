"""`zsad calibrate` end to end with the tiny random model, and `--calibration` in predict,
test and serve (pipeline checks: random weights)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsad.calibration import conformal_rank, load_calibration
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]
N_GOOD, RATE = 20, 0.2  # k = ceil(21 * 0.8) = 17: 3 of the 20 calibration images lie above the threshold


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """A line's good parts (MVTec layout, one category) and a calibration made from them."""
    root = tmp_path_factory.mktemp("line")
    generate_mvtec_like(root / "mvtec", categories=["checker"], size=64, n_train=N_GOOD, n_good=2, n_defect_per_kind=1)
    good = root / "mvtec" / "checker" / "train" / "good"
    calibration = root / "calibration.json"
    result = runner.invoke(app, ["calibrate", str(good), "--out", str(calibration), "--false-positive-rate", str(RATE), *TINY])
    assert result.exit_code == 0, result.output
    return root, good, calibration


def test_calibrate_writes_thresholds_identity_and_scores(line):
    _, _, path = line
    calibration = load_calibration(path)
    assert calibration.identity["method"] == "zeroshot"
    backbone = calibration.identity["backbone_config"]
    assert backbone["image_size"] == 64 and backbone["weights"] == "random:0"
    (entry,) = calibration.classes.values()
    assert entry.class_words == "object" and entry.n_images == N_GOOD
    k = conformal_rank(N_GOOD, RATE)
    assert entry.scores[k - 1] < entry.image_threshold <= entry.scores[k]
    assert 0.0 < entry.pixel_threshold < 1.0


def test_predict_with_the_calibration_labels_and_gives_p_values(line, tmp_path):
    _, good, path = line
    out = tmp_path / "results"
    result = runner.invoke(app, ["predict", str(good), "--out", str(out), "--calibration", str(path), *TINY])
    assert result.exit_code == 0, result.output
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    entry = next(iter(load_calibration(path).classes.values()))
    # the same images, scored the same way: exactly n - k of them above the threshold
    assert sum(int(row["label"]) for row in rows) == N_GOOD - conformal_rank(N_GOOD, RATE)
    calibration_scores = np.array(entry.scores)
    for row in rows:
        score = float(row["score"])
        expected = (1 + (calibration_scores >= score - 1e-6).sum()) / (N_GOOD + 1)  # CSV scores have 6 decimals
        assert float(row["p_value"]) == pytest.approx(expected, abs=1e-6)
        # labelled <=> p <= (n + 1 - k) / (n + 1), the rate the threshold guarantees
        assert int(row["label"]) == int(float(row["p_value"]) <= entry.expected_false_positive_rate + 1e-6)
    meta = json.loads((out / "scores.json").read_text())["meta"]
    assert meta["threshold"] == entry.image_threshold and meta["pixel_threshold"] == entry.pixel_threshold
    overlay = Image.open(out / "overlays" / "000.png")
    assert overlay.size[0] > 64  # the caption names the calibrated levels (drawn, not checked here)


def test_a_calibration_is_refused_for_another_model_or_with_threshold(line, tmp_path):
    _, good, path = line
    other = [*TINY[:5], "96", *TINY[6:]]  # --image-size 96
    result = runner.invoke(app, ["predict", str(good), "--out", str(tmp_path / "a"), "--calibration", str(path), *other])
    assert result.exit_code == 1
    assert "calibrated for another model" in result.output and "backbone_config.image_size: requested 96" in result.output
    result = runner.invoke(
        app, ["predict", str(good), "--out", str(tmp_path / "b"), "--calibration", str(path), "--class-name", "screw", *TINY]
    )
    assert result.exit_code == 1 and "prompt words 'screw'" in result.output
    result = runner.invoke(
        app, ["predict", str(good), "--out", str(tmp_path / "c"), "--calibration", str(path), "--threshold", "0.3", *TINY]
    )
    assert result.exit_code == 1 and "--threshold and --calibration" in result.output


def test_too_few_good_images_are_refused_before_the_model_loads(line, tmp_path):
    _, good, _ = line
    result = runner.invoke(app, ["calibrate", str(good), "--out", str(tmp_path / "c.json"), *TINY])  # default rate 0.01
    assert result.exit_code == 1 and "at least 99 normal images" in result.output and "found 20" in result.output
    assert not (tmp_path / "c.json").exists()


def test_label_free_evaluation_reports_fpr_and_recall_at_the_calibrated_thresholds(line, tmp_path):
    root, _, _ = line
    spec = f"mvtec:{root / 'mvtec'}"
    calibration = tmp_path / "per-class.json"
    result = runner.invoke(app, ["calibrate", "--data", spec, "--out", str(calibration), "--false-positive-rate", str(RATE), *TINY])
    assert result.exit_code == 0, result.output
    assert set(load_calibration(calibration).classes) == {"checker"}
    assert load_calibration(calibration).split == "train"  # auto: MVTec AD has no validation split
    out = tmp_path / "eval"
    result = runner.invoke(app, ["test", "--data", spec, "--out", str(out), "--calibration", str(calibration), *TINY])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    row = report["calibrated"]["per_class"]["checker"]
    assert row["fpr"] in (0.0, 0.5, 1.0) and row["recall"] is not None  # 2 normal test images
    assert 0.0 <= row["pixel_fpr"] <= 1.0 and 0.0 <= row["pixel_recall"] <= 1.0
    assert report["per_class"]["checker"]["image_auroc"] is not None  # beside the threshold-free metrics
    assert "At the calibrated thresholds" in (out / "metrics.md").read_text()


def test_serve_labels_with_the_calibration_and_answers_p_values(line):
    pytest.importorskip("fastapi", reason="the service needs the 'serve' extra")
    from fastapi.testclient import TestClient

    from zsad.api import load
    from zsad.serve import ServeSettings, create_app

    _, good, path = line
    entry = next(iter(load_calibration(path).classes.values()))
    predictor = load("zeroshot", backbone="zsad-tiny", weights="random", image_size=64, device="cpu")
    with TestClient(create_app(predictor, ServeSettings(), calibration=entry)) as client:
        files = [("file", (p.name, p.read_bytes(), "image/png")) for p in sorted(good.glob("*.png"))[:4]]
        answer = client.post("/predict?overlay=false", files=files).json()
    assert answer["threshold"] == entry.image_threshold
    for result in answer["results"]:
        assert result["label"] == int(result["score"] >= entry.image_threshold)
        assert result["p_value"] == pytest.approx((1 + sum(s >= result["score"] for s in entry.scores)) / (N_GOOD + 1))


def test_export_carries_the_calibration_and_onnx_predict_checks_it(line, tmp_path):
    pytest.importorskip("onnxruntime", reason="export needs the 'onnx' extra")
    _, good, path = line
    model = tmp_path / "line.onnx"
    result = runner.invoke(app, ["export", "--out", str(model), "--calibration", str(path), *TINY[:-1]])
    assert result.exit_code == 0, result.output
    from zsad.engine.onnx_export import OnnxPredictor

    meta = OnnxPredictor(model).meta
    entry = next(iter(load_calibration(path).classes.values()))
    assert meta["image_threshold"] == entry.image_threshold and meta["calibration_scores"] == entry.scores
    out = tmp_path / "onnx-results"
    result = runner.invoke(app, ["predict", str(good), "--onnx", str(model), "--calibration", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "scores.json").read_text())["images"]  # full-precision scores
    assert all(row["label"] == int(row["score"] >= entry.image_threshold) for row in rows)
    # onnxruntime reproduces torch's scores to float rounding: only the image on which the
    # threshold sits (the k-th) may land on the other side of it
    assert sum(row["label"] for row in rows) - (N_GOOD - conformal_rank(N_GOOD, RATE)) in (0, 1)
    other = tmp_path / "other.onnx"
    result = runner.invoke(app, ["export", "--out", str(other), *TINY[:4], "--image-size", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["predict", str(good), "--onnx", str(other), "--calibration", str(path), "--out", str(tmp_path / "x"), "--quiet"]
    )
    assert result.exit_code == 1 and "backbone_config.image_size: requested 32, the calibration file has 64" in result.output
