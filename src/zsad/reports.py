"""Readable result files: metric reports (JSON + Markdown), score tables, paper comparisons.

Metric values are fractions in ``[0, 1]`` everywhere in code and JSON; the
Markdown pages show them in percent with one decimal. A metric that cannot be
computed for a class (e.g. image AUROC when all its test images share one
label) is ``None`` and reads "n/a" — never 0 and never NaN.

A metric report is a dict of the shape::

    {"method": str, "backbone": str, "weights": str, "dataset": str,
     "pipeline_check": bool (optional),
     "per_class": {CLASS: {METRIC: float | None, "n_images": int, "n_anomalous": int}},
     "mean": {METRIC: float | None}}
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .clip_weights import is_random_weights
from .fileio import atomic_write_json, atomic_write_text, check_can_write

__all__ = [
    "METRIC_LABELS",
    "METRIC_ORDER",
    "comparison_markdown",
    "format_percent",
    "mean_over_classes",
    "metrics_markdown",
    "write_metrics_report",
    "write_scores",
]

METRIC_ORDER: list[str] = [
    "image_auroc",
    "image_ap",
    "image_f1max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1max",
    "pixel_aupro",
]

METRIC_LABELS: dict[str, str] = {
    "image_auroc": "Image AUROC",
    "image_ap": "Image AP",
    "image_f1max": "Image F1-max",
    "pixel_auroc": "Pixel AUROC",
    "pixel_ap": "Pixel AP",
    "pixel_f1max": "Pixel F1-max",
    "pixel_aupro": "Pixel AUPRO",
}

_HEADER_KEYS = ("method", "backbone", "weights", "dataset")
_STRUCTURE_KEYS = {"per_class", "mean", "pipeline_check", *_HEADER_KEYS}
_SCORE_COLUMNS = ("path", "score", "label", "error")

PIPELINE_CHECK_WARNING = (
    "> **WARNING: pipeline check, not a result.** These numbers come from random "
    "(untrained, not pretrained) weights. They only show that the pipeline runs end "
    "to end and say nothing about the quality of the method."
)


def _is_available(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def mean_over_classes(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """Per metric of :data:`METRIC_ORDER`, the mean over the classes that have it.

    A class "has" a metric when its value is present, not ``None`` and finite.
    The result is ``None`` for a metric no class has (never NaN or 0).
    """
    means: dict[str, float | None] = {}
    for metric in METRIC_ORDER:
        values = [float(row[metric]) for row in per_class.values() if _is_available(row.get(metric))]
        means[metric] = sum(values) / len(values) if values else None
    return means


def format_percent(value: float | None, with_sign: bool = False) -> str:
    """Fraction -> percent with one decimal (``0.9134 -> "91.3"``); "n/a" for None or NaN."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{100.0 * float(value):.1f}" + ("%" if with_sign else "")


def _escape_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    """Markdown table lines; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def is_pipeline_check(report: Mapping[str, Any]) -> bool:
    """True when the numbers come from random weights and must not be read as results."""
    return is_random_weights(str(report.get("weights", ""))) or bool(report.get("pipeline_check"))


def metrics_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown page for a metric report (see the module docstring for its shape).

    The page has a header line (method, backbone, weights, data set), a warning
    for pipeline checks (random weights), and a table with one row per class
    and a bold mean row. Only metrics that at least one class has get a column.
    Counts columns (images, anomalous) appear when the classes carry them; the
    mean row shows their totals. The mean row uses ``report["mean"]`` when
    present, otherwise :func:`mean_over_classes`.
    """
    per_class: Mapping[str, Mapping[str, Any]] = report.get("per_class", {})
    mean = report.get("mean") or mean_over_classes(per_class)
    metrics = [m for m in METRIC_ORDER if any(_is_available(row.get(m)) for row in per_class.values())]
    count_keys = [k for k in ("n_images", "n_anomalous", "n_samples") if any(k in row for row in per_class.values())]
    count_titles = {"n_images": "images", "n_anomalous": "anomalous", "n_samples": "samples"}

    lines = [f"# Anomaly detection results: {_escape_cell(report.get('dataset', 'unknown data set'))}", ""]
    header = [f"**{key}** {_escape_cell(report[key])}" for key in _HEADER_KEYS if key in report]
    if header:
        lines += [" · ".join(header), ""]
    if is_pipeline_check(report):
        lines += [PIPELINE_CHECK_WARNING, ""]
    settings = [
        f"{key}: {_escape_cell(value)}"
        for key, value in report.items()
        if key not in _STRUCTURE_KEYS and isinstance(value, (str, int, float, bool))
    ]
    if settings:
        lines += ["Settings: " + "; ".join(settings), ""]

    if not per_class:
        lines += ["No classes were evaluated.", ""]
        return "\n".join(lines)

    table_header = ["class"] + [count_titles[k] for k in count_keys] + [METRIC_LABELS[m] for m in metrics]
    rows = []
    for class_name, row in per_class.items():
        rows.append(
            [_escape_cell(class_name)]
            + [str(row.get(k, "")) for k in count_keys]
            + [format_percent(row.get(m)) for m in metrics]
        )
    totals = [str(sum(int(row.get(k) or 0) for row in per_class.values())) for k in count_keys]
    rows.append(
        [f"**mean** ({len(per_class)} {'class' if len(per_class) == 1 else 'classes'})"]
        + totals
        + [_bold(format_percent(mean.get(m))) for m in metrics]
    )
    lines += _table(table_header, rows, numeric_from=1)
    lines += [
        "",
        "Values in percent, one decimal. n/a: not defined for that class "
        "(e.g. all its test images have the same label, or it has no masks); "
        "the mean is taken over the classes where the metric is defined.",
        "",
    ]
    lines += _anomaly_type_lines(report)
    if report.get("calibrated"):
        lines += _calibrated_section(report["calibrated"])
    return "\n".join(lines)


def _calibrated_section(calibrated: Mapping[str, Any]) -> list[str]:
    """The rates at the thresholds of a `zsad calibrate` file, one row per class."""
    names = ("fpr", "recall", "pixel_fpr", "pixel_recall")
    titles = ["class", "image threshold", "FPR", "recall", "pixel threshold", "pixel FPR", "pixel recall"]
    rows = [
        [_escape_cell(key), f"{row['image_threshold']:.4f}", format_percent(row["fpr"]), format_percent(row["recall"]),
         f"{row['pixel_threshold']:.4f}", format_percent(row["pixel_fpr"]), format_percent(row["pixel_recall"])]
        for key, row in calibrated["per_class"].items()
    ]
    mean = calibrated.get("mean", {})
    rows.append(
        [
            "**mean**",
            "",
            *[_bold(format_percent(mean.get(n))) for n in names[:2]],
            "",
            *[_bold(format_percent(mean.get(n))) for n in names[2:]],
        ]
    )
    made_on = f", calibrated on the {calibrated['split']} split's normal images" if calibrated.get("split") else ""
    return [
        f"## At the calibrated thresholds ({_escape_cell(calibrated.get('file', 'calibration file'))}{made_on})",
        "",
        *_table(titles, rows, numeric_from=1),
        "",
        (
            "FPR: normal test images labelled anomalous; recall: anomalous test images labelled anomalous; pixel FPR: "
            "pixels of normal test images inside the contour; pixel recall: ground-truth defect pixels inside it. "
            "The thresholds come from normal images only; FPR and pixel FPR are the rates the calibration bounds "
            "(in expectation)."
        ),
        "",
    ]


def _anomaly_type_lines(report: Mapping[str, Any]) -> list[str]:
    """One table per anomaly type (MVTec LOCO's logical / structural): each type's images
    against all normal images of the class, and the mean over classes."""
    by_class: Mapping[str, Mapping[str, Mapping[str, Any]]] = report.get("per_anomaly_type") or {}
    means: Mapping[str, Mapping[str, Any]] = report.get("mean_per_anomaly_type") or {}
    lines: list[str] = []
    for anomaly_type in sorted({t for per_type in by_class.values() for t in per_type}):
        rows_by_class = {c: per_type[anomaly_type] for c, per_type in by_class.items() if anomaly_type in per_type}
        metrics = [m for m in METRIC_ORDER if any(_is_available(r.get(m)) for r in rows_by_class.values())]
        header = ["class", "images", "anomalous"] + [METRIC_LABELS[m] for m in metrics]
        rows = [
            [_escape_cell(c), str(r.get("n_images", "")), str(r.get("n_anomalous", ""))] + [format_percent(r.get(m)) for m in metrics]
            for c, r in rows_by_class.items()
        ]
        mean = means.get(anomaly_type) or mean_over_classes(rows_by_class)
        rows.append(["**mean**", "", ""] + [_bold(format_percent(mean.get(m))) for m in metrics])
        lines += [f"## {_escape_cell(anomaly_type)} anomalies (against all normal images)", ""]
        lines += _table(header, rows, numeric_from=1) + [""]
    return lines


def _bold(text: str) -> str:
    return text if text == "n/a" else f"**{text}**"


def write_metrics_report(report: Mapping[str, Any], out_dir: Path | str, overwrite: bool = False) -> list[Path]:
    """Write ``metrics.json`` and ``metrics.md`` into ``out_dir`` atomically.

    The mean over classes is filled in when ``report`` has none, so both files
    show the same numbers. NaN never reaches the JSON (it is written as null).
    Raises :class:`~zsad.fileio.OutputExistsError` before writing anything if a
    file exists and ``overwrite`` is false. Returns the two paths.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / "metrics.json", out_dir / "metrics.md"]
    check_can_write(paths, overwrite)
    full_report = dict(report)
    if not full_report.get("mean"):
        full_report["mean"] = mean_over_classes(full_report.get("per_class", {}))
    atomic_write_json(paths[0], full_report, overwrite=overwrite)  # never replaces a file made after the check
    atomic_write_text(paths[1], metrics_markdown(full_report), overwrite=overwrite)
    return paths


def _clean_score_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one score row; NaN scores become None, labels become 0/1/None."""
    if "path" not in row:
        raise ValueError(f"score row without 'path': {dict(row)}")
    score = row.get("score")
    if score is not None:
        score = float(score)
        if not math.isfinite(score):
            score = None
    label = row.get("label")
    if label is not None:
        if int(label) not in (0, 1) or int(label) != label:
            raise ValueError(f"label must be 0, 1 or None, got {label!r} for {row['path']}")
        label = int(label)
    clean = dict(row)
    clean.update(path=str(row["path"]), score=score, label=label, error=str(row.get("error") or ""))
    return clean


def write_scores(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path | str,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write per-image scores to ``scores.csv`` and ``scores.json`` in ``out_dir`` atomically.

    Each row has ``path``, ``score`` (float or None), ``label`` (0, 1 or None)
    and ``error`` ("" when the image was scored fine). The CSV header is
    ``path,score,label,error`` (further keys of the rows follow as extra
    columns); scores have 6 decimals, None is an empty cell. The JSON is
    ``{"meta": extra, "images": rows}`` with full-precision scores.
    Returns the two paths.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / "scores.csv", out_dir / "scores.json"]
    check_can_write(paths, overwrite)
    clean_rows = [_clean_score_row(row) for row in rows]
    columns = list(_SCORE_COLUMNS)
    for row in clean_rows:
        columns.extend(key for key in row if key not in columns)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in clean_rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "score" and value is not None:
                cells.append(f"{value:.6f}")
            else:
                cells.append("" if value is None else value)
        writer.writerow(cells)
    atomic_write_text(paths[0], buffer.getvalue(), overwrite=overwrite)
    atomic_write_json(paths[1], {"meta": dict(extra or {}), "images": clean_rows}, overwrite=overwrite)
    return paths


def comparison_markdown(
    ours: Mapping[str, Mapping[str, float | None]],
    paper: Mapping[str, Mapping[str, float | None]],
    metrics: Sequence[str],
    title: str,
    show_delta: bool = True,
    pipeline_check: bool = False,
) -> str:
    """Markdown table comparing our numbers with published ones, per data set.

    ``ours`` and ``paper`` map data set -> metric -> fraction in ``[0, 1]``
    (divide published percentages by 100; values above 1 are refused so the
    two sides cannot silently differ in scale). For each metric the table has
    an "ours" and a "paper" column, and with ``show_delta`` the difference
    ours - paper in percentage points. Missing values read "n/a". Rows: the
    data sets of ``ours`` in order, then those only the paper has. With
    ``pipeline_check`` (our numbers come from random weights) the table is
    preceded by the pipeline-check warning.
    """
    for side, table in (("ours", ours), ("paper", paper)):
        for dataset, values in table.items():
            for metric, value in values.items():
                if _is_available(value) and not 0.0 <= float(value) <= 1.0:
                    raise ValueError(f"{side}[{dataset!r}][{metric!r}] = {value}: values must be fractions in [0, 1]")
    datasets = list(ours) + [name for name in paper if name not in ours]
    header = ["data set"]
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric)
        header += [f"{label} ours", f"{label} paper"] + (["Δ"] if show_delta else [])
    rows = []
    for dataset in datasets:
        row = [_escape_cell(dataset)]
        for metric in metrics:
            ours_value = ours.get(dataset, {}).get(metric)
            paper_value = paper.get(dataset, {}).get(metric)
            row += [format_percent(ours_value), format_percent(paper_value)]
            if show_delta:
                row.append(_format_delta(ours_value, paper_value))
        rows.append(row)
    lines = [f"## {title}", ""]
    if pipeline_check:
        lines += [PIPELINE_CHECK_WARNING, ""]
    lines += _table(header, rows, numeric_from=1)
    note = "Values in percent, one decimal"
    note += "; Δ = ours − paper in percentage points." if show_delta else "."
    lines += ["", note, ""]
    return "\n".join(lines)


def _format_delta(ours_value: float | None, paper_value: float | None) -> str:
    """Difference of the two values as shown (rounded), so the table adds up for the reader."""
    if not (_is_available(ours_value) and _is_available(paper_value)):
        return "n/a"
    difference = float(format_percent(ours_value)) - float(format_percent(paper_value))
    return f"{difference:+.1f}"
