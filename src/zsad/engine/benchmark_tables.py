"""The extra tables of benchmark.md: mean ± std over seeds, and per-category results
beside the paper's per-category tables (e.g. PromptMoE Tabs. 8-12)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..reports import METRIC_LABELS, PIPELINE_CHECK_WARNING, format_percent

CATEGORY_METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro")


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}


def seed_statistics(
    runs: Sequence[Mapping[str, Mapping[str, Any]]],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per data set and metric, the mean and the sample standard deviation (n - 1; 0 for
    one run) of the runs' numbers. A metric a run lacks (NaN or absent) is left out of
    that metric's statistics; one no run has a number for (None: not measurable on that
    set) stays None; ``n_errors`` is summed, not averaged."""
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    for key in runs[0]:
        values: dict[str, list[float]] = {}
        for run in runs:
            for metric, value in _numbers(run.get(key, {})).items():
                if not math.isnan(value):
                    values.setdefault(metric, []).append(value)
        mean[key] = {metric: None for run in runs for metric, value in run.get(key, {}).items() if value is None}
        std[key] = {}
        for metric, series in values.items():
            if metric == "n_errors":
                mean[key][metric] = sum(series)
                continue
            average = sum(series) / len(series)
            mean[key][metric] = average
            spread = sum((value - average) ** 2 for value in series) / (len(series) - 1) if len(series) > 1 else 0.0
            std[key][metric] = math.sqrt(spread)
    return mean, std


def _percent_pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{format_percent(mean)} ± {100 * (std or 0.0):.1f}"


def seed_table(
    mean: Mapping[str, Mapping[str, float]], std: Mapping[str, Mapping[str, float]],
    paper: Mapping[str, Mapping[str, float]], metrics: Sequence[str], seeds: Sequence[int],
) -> str:
    """Markdown: per data set and metric, ours as mean ± std over the seeds, and the paper."""
    shown = [m for m in metrics if any(m in row for row in mean.values())]
    header = ["data set"] + [f"{METRIC_LABELS.get(m, m)} {side}" for m in shown for side in ("ours", "paper")]
    lines = [f"## Over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± std", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, row in mean.items():
        cells = [key]
        for metric in shown:
            cells += [_percent_pm(row.get(metric), std.get(key, {}).get(metric)), format_percent(paper.get(key, {}).get(metric))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "Percent; std: sample standard deviation over the seeds (n − 1).", ""])


def category_key(name: str) -> str:
    """The key categories are matched by: lower case, spaces as underscores."""
    return name.strip().lower().replace(" ", "_")


def category_means(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """{category: {metric: mean over the seeds}} from each seed's per-class metrics."""
    mean, _ = seed_statistics([{category_key(k): v for k, v in run.items()} for run in per_seed])
    return mean


def category_table(
    key: str, ours: Mapping[str, Mapping[str, float]], paper: Mapping[str, Mapping[str, float]],
    pipeline_check: bool = False,
) -> str:
    """Markdown: per category of data set ``key``, ours beside the paper's per-category
    table; categories only one side has read n/a on the other."""
    categories = list(paper) + [name for name in ours if name not in paper]
    header = ["category"] + [f"{METRIC_LABELS.get(m, m)} {side}" for m in CATEGORY_METRICS for side in ("ours", "paper")]
    lines = [f"### {key}: per category", ""]
    if pipeline_check:
        lines += [PIPELINE_CHECK_WARNING, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in categories:
        cells = [name]
        for metric in CATEGORY_METRICS:
            cells += [format_percent(ours.get(name, {}).get(metric)), format_percent(paper.get(name, {}).get(metric))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])
