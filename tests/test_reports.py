"""Metric reports, score tables and paper comparisons (zsad.reports)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from zsad.fileio import OutputExistsError
from zsad.reports import (
    METRIC_LABELS,
    METRIC_ORDER,
    comparison_markdown,
    format_percent,
    mean_over_classes,
    metrics_markdown,
    write_metrics_report,
    write_scores,
)


def _report(weights: str = "openai", **extra) -> dict:
    per_class = {
        "bottle": {"image_auroc": 0.91234, "image_ap": 0.95, "pixel_auroc": 0.88, "n_images": 83, "n_anomalous": 63},
        "cable": {"image_auroc": 0.80, "image_ap": None, "pixel_auroc": float("nan"), "n_images": 150, "n_anomalous": 92},
        "all_good": {"image_auroc": None, "image_ap": None, "pixel_auroc": 0.70, "n_images": 20, "n_anomalous": 0},
    }
    return {
        "method": "moeclip",
        "backbone": "ViT-L-14-336",
        "weights": weights,
        "dataset": "mvtec",
        "per_class": per_class,
        **extra,
    }


def _table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_metric_order_and_labels_cover_the_protocol() -> None:
    assert METRIC_ORDER == [
        "image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro",
    ]
    assert set(METRIC_LABELS) == set(METRIC_ORDER)


def test_mean_over_classes_skips_missing_and_never_invents_numbers() -> None:
    mean = mean_over_classes(_report()["per_class"])
    assert mean["image_auroc"] == pytest.approx((0.91234 + 0.80) / 2)  # all_good's None excluded
    assert mean["image_ap"] == pytest.approx(0.95)
    assert mean["pixel_auroc"] == pytest.approx((0.88 + 0.70) / 2)  # cable's NaN excluded
    assert mean["pixel_aupro"] is None and mean["image_f1max"] is None
    assert set(mean) == set(METRIC_ORDER)
    assert mean_over_classes({}) == {metric: None for metric in METRIC_ORDER}


def test_format_percent() -> None:
    assert format_percent(0.91234) == "91.2"
    assert format_percent(0.91251) == "91.3"
    assert format_percent(1.0) == "100.0"
    assert format_percent(0) == "0.0"
    assert format_percent(None) == "n/a"
    assert format_percent(float("nan")) == "n/a"
    assert format_percent(0.5, with_sign=True) == "50.0%"


def test_metrics_markdown_table() -> None:
    markdown = metrics_markdown(_report())
    assert "**method** moeclip" in markdown and "**backbone** ViT-L-14-336" in markdown
    assert "**dataset** mvtec" in markdown and "**weights** openai" in markdown
    assert "WARNING" not in markdown
    rows = _table_rows(markdown)
    # columns only for metrics some class has: no F1-max or AUPRO columns
    assert rows["class"] == ["images", "anomalous", "Image AUROC", "Image AP", "Pixel AUROC"]
    assert rows["bottle"] == ["83", "63", "91.2", "95.0", "88.0"]
    assert "**mean** (1 class)" in metrics_markdown({"per_class": {"a": {"image_auroc": 0.5}}})
    assert rows["cable"] == ["150", "92", "80.0", "n/a", "n/a"]
    assert rows["all_good"] == ["20", "0", "n/a", "n/a", "70.0"]
    assert rows["**mean** (3 classes)"] == ["253", "155", "**85.6**", "**95.0**", "**79.0**"]
    assert "nan" not in markdown.lower()


def test_metrics_markdown_prefers_given_mean_and_shows_settings() -> None:
    report = _report(mean={"image_auroc": 0.5}, checkpoint="runs/a.safetensors", image_size=518)
    markdown = metrics_markdown(report)
    assert _table_rows(markdown)["**mean** (3 classes)"][2:] == ["**50.0**", "n/a", "n/a"]
    assert "checkpoint: runs/a.safetensors" in markdown and "image_size: 518" in markdown


@pytest.mark.parametrize("report", [_report(weights="random"), _report(weights="random:3"), _report(pipeline_check=True)])
def test_metrics_markdown_warns_on_pipeline_checks(report: dict) -> None:
    markdown = metrics_markdown(report)
    warning = next(line for line in markdown.splitlines() if "WARNING" in line)
    assert "random" in warning and "pipeline check" in warning and "not a result" in warning
    # prominent: above the table
    assert markdown.index("WARNING") < markdown.index("| class")


def test_write_metrics_report_is_nan_free_and_protects_existing_files(tmp_path: Path) -> None:
    paths = write_metrics_report(_report(), tmp_path / "out")
    assert [p.name for p in paths] == ["metrics.json", "metrics.md"]
    text = paths[0].read_text()
    assert "NaN" not in text
    saved = json.loads(text)
    assert saved["per_class"]["cable"]["pixel_auroc"] is None
    assert saved["mean"]["image_auroc"] == pytest.approx((0.91234 + 0.80) / 2)
    assert saved["mean"]["pixel_aupro"] is None
    assert "**85.6**" in paths[1].read_text()

    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_metrics_report(_report(weights="random"), tmp_path / "out")
    assert "WARNING" not in paths[1].read_text()  # untouched
    write_metrics_report(_report(weights="random"), tmp_path / "out", overwrite=True)
    assert "WARNING" in paths[1].read_text()


def test_write_scores_csv_and_json(tmp_path: Path) -> None:
    rows = [
        {"path": Path("imgs/a.png"), "score": 0.123456789, "label": 1, "error": ""},
        {"path": "imgs/b.png", "score": None, "label": None, "error": "cannot open image"},
        {"path": "imgs/c.png", "score": float("nan"), "label": 0, "error": "", "class_name": "bottle"},
    ]
    csv_path, json_path = write_scores(rows, tmp_path, extra={"method": "zeroshot", "threshold": float("inf")})
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "path,score,label,error,class_name"
    parsed = list(csv.DictReader(lines))
    assert parsed[0] == {"path": "imgs/a.png", "score": "0.123457", "label": "1", "error": "", "class_name": ""}
    assert parsed[1]["score"] == "" and parsed[1]["label"] == "" and parsed[1]["error"] == "cannot open image"
    assert parsed[2]["score"] == "" and parsed[2]["class_name"] == "bottle"

    text = json_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = json.loads(text)
    assert saved["meta"] == {"method": "zeroshot", "threshold": None}
    assert saved["images"][0]["score"] == pytest.approx(0.123456789)  # full precision in JSON
    assert saved["images"][0]["path"] == "imgs/a.png"
    assert saved["images"][2]["score"] is None

    with pytest.raises(OutputExistsError):
        write_scores(rows, tmp_path)
    with pytest.raises(ValueError, match="label"):
        write_scores([{"path": "x", "score": 0.1, "label": 2, "error": ""}], tmp_path / "other")


def test_write_scores_header_for_plain_rows(tmp_path: Path) -> None:
    csv_path, _ = write_scores([{"path": "a.png", "score": 1.0, "label": 0, "error": ""}], tmp_path)
    assert csv_path.read_text() == "path,score,label,error\na.png,1.000000,0,\n"


def test_comparison_markdown() -> None:
    ours = {"mvtec": {"image_auroc": 0.5123, "pixel_auroc": None}, "headct": {"image_auroc": 0.61}}
    paper = {"mvtec": {"image_auroc": 0.939, "pixel_auroc": 0.925}, "visa": {"image_auroc": 0.836}}
    markdown = comparison_markdown(ours, paper, ["image_auroc", "pixel_auroc"], "MoECLIP vs paper")
    assert markdown.startswith("## MoECLIP vs paper")
    rows = _table_rows(markdown)
    assert rows["data set"] == [
        "Image AUROC ours", "Image AUROC paper", "Δ", "Pixel AUROC ours", "Pixel AUROC paper", "Δ",
    ]
    assert rows["mvtec"] == ["51.2", "93.9", "-42.7", "n/a", "92.5", "n/a"]
    assert rows["headct"] == ["61.0", "n/a", "n/a", "n/a", "n/a", "n/a"]
    assert rows["visa"] == ["n/a", "83.6", "n/a", "n/a", "n/a", "n/a"]
    assert list(rows) == ["data set", "mvtec", "headct", "visa"]

    with pytest.raises(ValueError, match="fractions"):
        comparison_markdown(ours, {"mvtec": {"image_auroc": 93.9}}, ["image_auroc"], "t")
    plain = comparison_markdown(ours, paper, ["image_auroc"], "t", show_delta=False)
    assert "Δ" not in plain and "WARNING" not in plain
    checked = comparison_markdown(ours, paper, ["image_auroc"], "t", pipeline_check=True)
    assert checked.index("WARNING: pipeline check, not a result") < checked.index("| data set")


def test_delta_matches_the_rounded_numbers_shown() -> None:
    # 91.25 -> "91.2" or "91.3" depending on float representation; Δ must match what is shown
    ours, paper = {"d": {"image_auroc": 0.91249}}, {"d": {"image_auroc": 0.92251}}
    row = _table_rows(comparison_markdown(ours, paper, ["image_auroc"], "t"))["d"]
    assert math.isclose(float(row[0]) - float(row[1]), float(row[2]), abs_tol=1e-9)
