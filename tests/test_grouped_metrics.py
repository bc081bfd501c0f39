"""Sample-level scores (max over a sample's views) and per-anomaly-type metrics, in
isolation and through `evaluate` / `zsad test` on the Real-IAD and MVTec LOCO mini trees."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from data_factories import make_manifest, save
from new_layout_factories import make_mvtec_ad2_tree, make_mvtec_loco_tree, make_realiad_tree, plain
from typer.testing import CliRunner

from zsad.data import build_dataset
from zsad.engine.grouped_metrics import max_over_views, per_anomaly_type, selected_chunks
from zsad.engine.map_spill import SpilledMaps
from zsad.metrics import image_metrics, pixel_metrics
from zsad.reports import metrics_markdown

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]


def reference_max_over_views(scores, labels, groups):
    """Slow reference: a dict of views per sample, in order of first appearance."""
    samples: dict[object, list[int]] = {}
    for index, group in enumerate(groups):
        samples.setdefault(group if group is not None else f"image-{index}", []).append(index)
    out_scores, out_labels = [], []
    for views in samples.values():
        out_scores.append(max(scores[i] for i in views))
        view_labels = [labels[i] for i in views]
        out_labels.append(1 if 1 in view_labels else (-1 if -1 in view_labels else 0))
    return np.array(out_scores), np.array(out_labels)


@pytest.mark.parametrize("seed", range(5))
def test_max_over_views_equals_the_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    scores = rng.random(n)
    labels = rng.choice([-1, 0, 0, 1], size=n)
    groups = [None if rng.random() < 0.2 else f"s{rng.integers(0, 8)}" for _ in range(n)]
    got = max_over_views(scores, labels, groups)
    expected = reference_max_over_views(scores, labels, groups)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_max_over_views_a_sample_is_anomalous_when_one_view_is():
    scores, labels = max_over_views(np.array([0.1, 0.9, 0.3, 0.2]), np.array([0, 1, 0, 0]), ["a", "a", "b", "b"])
    assert scores.tolist() == [0.9, 0.3] and labels.tolist() == [1, 0]


@pytest.mark.parametrize("chunk_images", [1, 2, 100])
def test_per_anomaly_type_equals_the_metrics_of_each_subset(tmp_path, chunk_images):
    rng = np.random.default_rng(0)
    n, side = 12, 16
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, -1])
    types = [None] * 4 + ["logical", "structural"] * 3 + [None, None]
    masks = np.zeros((n, side, side), dtype=bool)
    masks[labels == 1, 4:9, 3:7] = True
    maps = (rng.random((n, side, side)) + 0.4 * masks).astype(np.float32)
    scores = rng.random(n)
    store = SpilledMaps(tmp_path, "class", (side, side))
    for anomaly_map, mask in zip(maps, masks):
        store.append(anomaly_map, mask)
    store.close()
    keep = np.arange(n) % 3 == 0
    chunked = list(selected_chunks(store, keep, chunk_bytes=chunk_images * side * side * 4)())
    assert np.array_equal(np.concatenate([m for m, _ in chunked]), maps[keep])
    report = per_anomaly_type(scores, labels, types, store)
    assert set(report) == {"logical", "structural"}
    for anomaly_type, metrics in report.items():
        rows = (labels == 0) | ((labels == 1) & np.array([t == anomaly_type for t in types]))
        assert metrics["n_images"] == 8 and metrics["n_anomalous"] == 3
        expected = {**image_metrics(scores[rows], labels[rows]), **pixel_metrics(maps[rows], masks[rows])}
        assert {k: metrics[k] for k in expected} == expected


def _direct_scores(detector, dataset):
    from zsad.text import ClassNames

    names = ClassNames.load()
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():
        output = detector(torch.stack([item["image"] for item in items]), [names.resolve(item["class_name"]) for item in items])
    return output.pred_score.float().numpy().astype(np.float64)


def _evaluate(detector, dataset, **options):
    from zsad.engine.evaluation import evaluate
    from zsad.text import ClassNames

    return evaluate(detector, dataset, ClassNames.load(), torch.device("cpu"), batch_size=4, show_progress=False, **options).report


def test_evaluate_scores_realiad_samples_by_the_max_over_views(tiny_backbone, tmp_path):
    from zsad.methods import build_method

    expected_counts = make_realiad_tree(tmp_path)
    dataset = build_dataset(f"realiad:{tmp_path}", image_size=64)
    detector = build_method("zeroshot", tiny_backbone, {})
    scores = _direct_scores(detector, dataset)
    labels = np.array([s.label for s in dataset.samples])
    per_view = _evaluate(detector, dataset)["per_class"]["audiojack"]
    assert per_view["image_auroc"] == pytest.approx(image_metrics(scores, labels)["image_auroc"], abs=1e-6)
    report = _evaluate(detector, dataset, sample_score="max-over-views")
    per_sample = report["per_class"]["audiojack"]
    sample_scores, sample_labels = reference_max_over_views(scores, labels, [s.group for s in dataset.samples])
    assert per_sample["n_samples"] == expected_counts["test_samples"] and per_sample["n_images"] == expected_counts["test"]
    assert sample_labels.sum() == expected_counts["anomalous_samples"]
    for metric, value in image_metrics(sample_scores, sample_labels).items():
        assert per_sample[metric] == pytest.approx(value, abs=1e-6)
    assert per_sample["pixel_auroc"] == per_view["pixel_auroc"]  # pixel metrics stay per image
    assert report["sample_score"] == "max-over-views" and "samples" in metrics_markdown(report)


def test_evaluate_reports_loco_anomaly_types_apart(tiny_backbone, tmp_path):
    from zsad.methods import build_method

    make_mvtec_loco_tree(tmp_path)
    dataset = build_dataset(f"mvtec-loco:{tmp_path}", image_size=64)
    detector = build_method("zeroshot", tiny_backbone, {})
    scores = _direct_scores(detector, dataset)
    labels = np.array([s.label for s in dataset.samples])
    report = _evaluate(detector, dataset)
    by_type = report["per_anomaly_type"]["breakfast_box"]
    assert set(by_type) == {"logical", "structural"}
    for anomaly_type, metrics in by_type.items():
        rows = np.array([s.label == 0 or s.anomaly_type == anomaly_type for s in dataset.samples])
        assert metrics["n_images"] == rows.sum() and metrics["n_anomalous"] == (labels[rows] == 1).sum()
        assert metrics["image_auroc"] == pytest.approx(image_metrics(scores[rows], labels[rows])["image_auroc"], abs=1e-6)
        assert 0.0 <= metrics["pixel_auroc"] <= 1.0
        assert report["mean_per_anomaly_type"][anomaly_type]["image_auroc"] == metrics["image_auroc"]
    markdown = metrics_markdown(report)
    assert "## logical anomalies (against all normal images)" in markdown
    assert "## structural anomalies" in markdown


def test_mvtec_report_has_no_anomaly_type_section(tiny_backbone, tmp_path):
    from zsad.data.synth import generate_mvtec_like
    from zsad.methods import build_method

    generate_mvtec_like(tmp_path, categories=["disc"], n_train=0, n_good=2, n_defect_per_kind=1, size=64)
    report = _evaluate(build_method("zeroshot", tiny_backbone, {}), build_dataset(f"mvtec:{tmp_path}", image_size=64))
    assert "per_anomaly_type" not in report and "sample_score" not in report


def test_cli_test_on_loco_realiad_and_a_refused_private_split(tmp_path):
    from zsad.cli import app

    make_mvtec_loco_tree(tmp_path / "loco")
    result = runner.invoke(app, ["test", "--data", f"mvtec-loco:{tmp_path / 'loco'}", "--out", str(tmp_path / "o1"), *TINY])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "o1" / "metrics.json").read_text())["per_anomaly_type"]["breakfast_box"]) == {"logical", "structural"}
    assert "structural anomalies" in (tmp_path / "o1" / "metrics.md").read_text()
    make_realiad_tree(tmp_path / "realiad")
    args = ["test", "--data", f"realiad:{tmp_path / 'realiad'}", "--out", str(tmp_path / "o2"), "--sample-score", "max-over-views", *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["per_class"]["audiojack"]["n_samples"] == 3
    refused = runner.invoke(app, [*args[:-len(TINY)], "--sample-score", "mean", *TINY])
    assert refused.exit_code != 0 and "max-over-views" in refused.output
    make_mvtec_ad2_tree(tmp_path / "ad2", categories=("can",))
    shutil.rmtree(tmp_path / "ad2" / "can" / "test_public")
    private = runner.invoke(app, ["test", "--data", f"mvtec-ad2:{tmp_path / 'ad2'}", "--out", str(tmp_path / "o3"), *TINY])
    assert private.exit_code != 0
    assert "predict only" in private.output and "zsad predict" in private.output


def test_cli_data_info_lists_splits_types_and_views(tmp_path):
    from zsad.cli import app

    make_mvtec_ad2_tree(tmp_path / "ad2")
    info = runner.invoke(app, ["data", "info", f"mvtec-ad2:{tmp_path / 'ad2'}"])
    assert info.exit_code == 0, info.output
    assert "splits: test 8, train 6, validation 4, test_private 6 (no labels: predict only), test_private_mixed 4" in info.output
    private = runner.invoke(app, ["data", "info", f"mvtec-ad2:{tmp_path / 'ad2'}", "--split", "test_private"])
    assert private.exit_code == 0 and "has_image_labels=False" in private.output
    make_realiad_tree(tmp_path / "realiad")
    info = runner.invoke(app, ["data", "info", f"realiad:{tmp_path / 'realiad'}"])
    assert "multi-view: 3 samples; views per sample: 5 views x 3" in info.output
    assert "AK" in info.output and "BX" in info.output
    make_mvtec_loco_tree(tmp_path / "loco")
    info = runner.invoke(app, ["data", "info", f"mvtec-loco:{tmp_path / 'loco'}"])
    assert "anomaly types (reported apart by zsad test): logical 2, structural 1" in info.output


def test_cli_test_refuses_a_data_set_without_labels(tmp_path):
    from zsad.cli import app

    save(plain(), tmp_path / "a.png")
    manifest = make_manifest(tmp_path, [{"image_path": "a.png", "label": None}])
    result = runner.invoke(app, ["test", "--data", f"manifest:{manifest}", "--out", str(tmp_path / "out"), *TINY])
    assert result.exit_code != 0 and "none of its 1 images has a label" in result.output
