"""Issue 17, label-free evaluation on MVTec AD 2: `zsad calibrate --data mvtec-ad2:ROOT`
calibrates each category on its held-out normal images (validation/good), and `zsad test
--calibration` reports the calibrated rates beside the threshold-free metrics (pipeline
checks: the tiny random model, generated trees)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from new_layout_factories import make_mvtec_ad2_tree
from typer.testing import CliRunner

from zsad.calibration import load_calibration
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]
CATEGORIES = ("can", "vial")
N_VALIDATION, RATE = 20, 0.05  # 20 >= 1/0.05 - 1 = 19 validation images; train/good has 3, too few for the rate
RATES = ("fpr", "recall", "pixel_fpr", "pixel_recall")


@pytest.fixture(scope="module")
def ad2(tmp_path_factory):
    """An MVTec AD 2 tree and the calibration `zsad calibrate --data` made from it."""
    root = tmp_path_factory.mktemp("ad2")
    make_mvtec_ad2_tree(root / "tree", categories=CATEGORIES, n_validation=N_VALIDATION)
    spec = f"mvtec-ad2:{root / 'tree'}"
    calibration = root / "calibration.json"
    result = runner.invoke(app, ["calibrate", "--data", spec, "--out", str(calibration), "--false-positive-rate", str(RATE), *TINY])
    assert result.exit_code == 0, result.output
    return root, spec, calibration, result.output


def test_calibrate_uses_the_validation_split_and_records_it(ad2):
    _, _, path, output = ad2
    calibration = load_calibration(path)
    assert calibration.split == "validation" and json.loads(path.read_text())["split"] == "validation"
    assert "validation split" in output
    assert set(calibration.classes) == set(CATEGORIES)
    assert all(entry.n_images == N_VALIDATION for entry in calibration.classes.values())  # not train/good's 3


def test_a_category_entry_is_the_calibration_of_its_validation_folder(ad2, tmp_path):
    root, _, path, _ = ad2
    folder = tmp_path / "can.json"
    good = root / "tree" / "can" / "validation" / "good"
    result = runner.invoke(
        app, ["calibrate", str(good), "--class-name", "can", "--out", str(folder), "--false-positive-rate", str(RATE), *TINY]
    )
    assert result.exit_code == 0, result.output
    alone = next(iter(load_calibration(folder).classes.values()))
    entry = load_calibration(path).classes["can"]
    assert load_calibration(folder).split is None  # folders are no data-set split
    assert entry.class_words == alone.class_words
    np.testing.assert_allclose(entry.scores, alone.scores, rtol=1e-6)
    assert entry.image_threshold == pytest.approx(alone.image_threshold, rel=1e-6)
    assert entry.pixel_threshold == pytest.approx(alone.pixel_threshold, rel=1e-6)


def test_split_train_is_refused_with_the_number_of_images_the_rate_needs(ad2, tmp_path):
    _, spec, _, _ = ad2
    result = runner.invoke(
        app, ["calibrate", "--data", spec, "--split", "train", "--out", str(tmp_path / "t.json"), "--false-positive-rate", str(RATE), *TINY]
    )
    assert result.exit_code == 1 and "needs at least 19 normal images" in result.output and "3" in result.output


def test_test_reports_calibrated_rates_per_class_and_mean_beside_the_threshold_free_metrics(ad2, tmp_path):
    _, spec, path, _ = ad2
    out = tmp_path / "eval"
    result = runner.invoke(app, ["test", "--data", spec, "--out", str(out), "--calibration", str(path), *TINY])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    calibration = load_calibration(path)
    calibrated = report["calibrated"]
    assert calibrated["split"] == "validation" and set(calibrated["per_class"]) == set(CATEGORIES)
    for key, row in calibrated["per_class"].items():
        assert row["image_threshold"] == calibration.classes[key].image_threshold
        assert row["pixel_threshold"] == calibration.classes[key].pixel_threshold
        assert row["fpr"] in (0.0, 0.5, 1.0) and row["recall"] in (0.0, 0.5, 1.0)  # 2 good, 2 bad test_public images
        assert 0.0 <= row["pixel_fpr"] <= 1.0 and 0.0 <= row["pixel_recall"] <= 1.0
        assert report["per_class"][key]["image_auroc"] is not None and report["per_class"][key]["pixel_auroc"] is not None
    for name in RATES:
        assert calibrated["mean"][name] == pytest.approx(np.mean([row[name] for row in calibrated["per_class"].values()]))
    markdown = (out / "metrics.md").read_text()
    assert "At the calibrated thresholds" in markdown and "calibrated on the validation split" in markdown


def test_split_options_that_do_not_apply_are_refused(ad2, tmp_path):
    root, _, _, _ = ad2
    generate_mvtec_like(root / "mvtec", categories=["disc"], size=64, n_train=2, n_good=1, n_defect_per_kind=1)
    out = str(tmp_path / "c.json")
    result = runner.invoke(app, ["calibrate", "--data", f"mvtec:{root / 'mvtec'}", "--split", "validation", "--out", out, *TINY])
    assert result.exit_code == 1 and "has no validation split" in result.output and "--split train" in result.output
    good = root / "tree" / "can" / "validation" / "good"
    result = runner.invoke(app, ["calibrate", str(good), "--split", "train", "--out", out, *TINY])
    assert result.exit_code == 1 and "--split selects the normal images of --data" in result.output
    result = runner.invoke(app, ["calibrate", "--data", f"mvtec:{root / 'mvtec'}", "--split", "test", "--out", out, *TINY])
    assert result.exit_code == 2 and "test" in result.output
