"""MuSc through its entry points: `zsad test`, `zsad predict` (sets, subsets, references,
the hint), `zsad benchmark` without training, and the refusals of the per-image ones."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.methods.build import build_detector

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("musc") / "mvtec"
    generate_mvtec_like(root, categories=["disc"], n_train=2, n_good=4, n_defect_per_kind=2, size=32)
    return root


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def detector(**config):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_detector("musc", backbone="zsad-tiny", weights="random", image_size=32, method_config=config).eval()


def test_a_batch_is_one_set_its_order_permutes_the_outputs_and_spilling_changes_nothing():
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model = detector()
    with torch.no_grad():
        base = model(images, None)
        order = torch.tensor([3, 0, 5, 1, 4, 2])
        permuted = model(images[order], None)
        spilled = detector(memory_mb=1e-6, block_mb=0.01)(images, None)
    torch.testing.assert_close(permuted.anomaly_map, base.anomaly_map[order], rtol=0, atol=1e-6)
    torch.testing.assert_close(permuted.pred_score, base.pred_score[order], rtol=0, atol=1e-6)
    torch.testing.assert_close(spilled.anomaly_map, base.anomaly_map, rtol=0, atol=1e-6)


def test_zsad_test_scores_each_category_as_a_set(data, tmp_path):
    result = invoke("test", "--data", f"mvtec:{data}", "--method", "musc", "--out", tmp_path / "t", *TINY)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "t" / "metrics.json").read_text())
    disc = report["per_class"]["disc"]
    assert "transductive" in report and disc["set_sizes"] == [disc["n_images"]]
    assert 0 <= disc["image_auroc"] <= 1 and 0 <= disc["pixel_auroc"] <= 1
    halves = invoke("test", "--data", f"mvtec:{data}", "--method", "musc", "--set-size", "5", "--out", tmp_path / "h", *TINY)
    assert halves.exit_code == 0, halves.output
    assert sum(json.loads((tmp_path / "h" / "metrics.json").read_text())["per_class"]["disc"]["set_sizes"]) == disc["n_images"]


def test_zsad_predict_with_musc_sets_references_and_refusals(data, tmp_path):
    folder = data / "disc" / "test"
    result = invoke("predict", folder, "--method", "musc", "--out", tmp_path / "p", *TINY)
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "p" / "scores.json").read_text())
    rows = scores["rows"] if "rows" in scores else scores["images"]
    assert len(rows) == len(list(folder.rglob("*.png")))
    assert scores["meta"]["method"] == "musc" and scores["meta"]["transductive"] is True
    one = next(folder.rglob("*.png"))
    refused = invoke("predict", one, "--method", "musc", "--out", tmp_path / "one", *TINY)
    assert refused.exit_code == 1 and "at least 2 images" in refused.output
    joined = invoke("predict", one, "--method", "musc", "--reference", data / "disc" / "train", "--out", tmp_path / "ref", *TINY)
    assert joined.exit_code == 0, joined.output
    rows = json.loads((tmp_path / "ref" / "scores.json").read_text())
    assert rows["meta"]["references_in_set"] == 2
    assert invoke("predict", folder, "--set-size", "4", "--out", tmp_path / "z", *TINY).exit_code == 1
    compiled = invoke("predict", folder, "--method", "musc", "--compile", "default", "--out", tmp_path / "c", *TINY)
    assert compiled.exit_code == 1 and "--compile default does not apply to --method musc" in compiled.output


def test_the_default_method_suggests_musc_from_ten_images_of_one_class(data, tmp_path):
    many = invoke("predict", data / "disc", "--out", tmp_path / "many", *TINY)
    few = invoke("predict", data / "disc" / "train", "--out", tmp_path / "few", *TINY)
    assert many.exit_code == 0 and few.exit_code == 0
    assert "--method musc" in many.output and "most images are normal" in many.output
    assert "--method musc" not in few.output


@pytest.mark.parametrize("command", [
    ["export", "--out", "{tmp}/m.onnx"],
    ["serve", "--port", "65000"],
    ["test", "--data", "mvtec:{data}", "--shots", "1", "--out", "{tmp}/s"],
])
def test_per_image_entry_points_refuse_a_set_method_in_one_line(command, data, tmp_path):
    args = [part.format(tmp=tmp_path, data=data) for part in command]
    options = TINY if command[0] == "test" else TINY[:-1]  # export and serve have no --quiet
    result = invoke(*args, "--method", "musc", *options)
    assert result.exit_code == 1
    assert "scores a set of images of one product" in result.output


def test_benchmark_without_training_shows_the_published_rows_and_the_note(data, tmp_path):
    result = invoke("benchmark", "--method", "musc", "--test", f"mvtec:{data}", "--out", tmp_path / "b", *TINY)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert summary["paper"]["mvtec"]["image_auroc"] == 0.978 and "transductive" in summary["note"]
    assert "not comparable one for one" in (tmp_path / "b" / "benchmark.md").read_text()


def test_class_names_group_images_by_their_category_folder(tmp_path):
    from zsad.engine.set_scoring import group_by_class_folder

    paths = [tmp_path / "screw" / "a.png", tmp_path / "screw" / "bad" / "b.png", tmp_path / "nut" / "c.png", tmp_path / "d.png"]
    groups = group_by_class_folder(paths, {"screw": "screw", "nut": "metal nut"})
    assert groups == {"screw": paths[:2], "nut": [paths[2]], "": [paths[3]]}
    assert group_by_class_folder(paths, ()) == {"": paths}
