"""Files written by ``zsad analyze experts``: names, CSV tables, plots, the index page.

Experts are numbered 1..K in every table and plot title here, as in the paper.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..fileio import atomic_write_json, atomic_write_text, csv_text
from ..plurals import counted
from ..reports import PIPELINE_CHECK_WARNING
from .experts import ExpertAnalysis
from .plots import plot_bars, plot_expert_assignment, plot_matrix

__all__ = ["OutputLayout", "write_analysis", "write_selection_maps"]

ALL_DATASETS = "all"
_STATISTIC_COLUMNS = (("gradient", "mean Sobel gradient"), ("std", "mean pixel std"), ("entropy", "mean entropy (bits)"))


def expert_labels(num_experts: int) -> list[str]:
    return [f"expert_{n + 1}" for n in range(num_experts)]


def _file_part(layer: str) -> str:
    """A routed layer's name as part of a file name ("12/normal" -> "12-normal")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(layer))


@dataclass(frozen=True)
class OutputLayout:
    """Where each output lives under ``out_dir``."""

    out_dir: Path

    def selection(self, dataset: str, image: str, block: str, rank: int) -> Path:
        return self.out_dir / "selection" / dataset / f"{image}_block{_file_part(block)}_top{rank}.png"

    def similarity(self, block: str, dataset: str | None, suffix: str) -> Path:
        middle = "" if dataset is None else f"_{dataset}"
        return self.out_dir / f"similarity{middle}_block{_file_part(block)}.{suffix}"

    def utilisation_plot(self, block: str) -> Path:
        return self.out_dir / f"utilisation_block{_file_part(block)}.png"

    @property
    def utilisation_csv(self) -> Path:
        return self.out_dir / "utilisation.csv"

    @property
    def statistics_csv(self) -> Path:
        return self.out_dir / "expert_statistics.csv"

    @property
    def statistics_md(self) -> Path:
        return self.out_dir / "expert_statistics.md"

    @property
    def index_md(self) -> Path:
        return self.out_dir / "analysis.md"

    @property
    def index_json(self) -> Path:
        return self.out_dir / "analysis.json"

    def summary_files(self, blocks: Sequence[str], datasets: Sequence[str]) -> list[Path]:
        """Every file :func:`write_analysis` writes (selection maps excluded)."""
        paths = []
        for block in blocks:
            for dataset in [None, *datasets]:
                paths += [self.similarity(block, dataset, "csv"), self.similarity(block, dataset, "png")]
            paths.append(self.utilisation_plot(block))
        return paths + [self.utilisation_csv, self.statistics_csv, self.statistics_md, self.index_md, self.index_json]


def _number(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_selection_maps(
    layout: OutputLayout,
    dataset: str,
    image_name: str,
    rgb: np.ndarray,
    experts: np.ndarray,
    weights: np.ndarray,
    block: str,
    num_experts: int,
) -> list[Path]:
    """One PNG per rank: ``experts`` / ``weights`` (R, h, w) over the uint8 ``rgb`` (S, S, 3)."""
    paths = []
    for rank in range(experts.shape[0]):
        title = f"{image_name}, block {block}: top-{rank + 1} expert"
        paths.append(
            plot_expert_assignment(
                rgb, experts[rank], num_experts, layout.selection(dataset, image_name, block, rank + 1), weights=weights[rank], title=title
            )
        )
    return paths


def _layer_value(name: str) -> int | str:
    """A routed layer's name for JSON: the block number when the name is one."""
    return int(name) if str(name).isdigit() else name


def _write_similarity(layout: OutputLayout, analysis: ExpertAnalysis, block: str, dataset: str | None) -> list[Path]:
    matrix = analysis.similarity(block, dataset)
    labels = expert_labels(analysis.num_experts)
    csv_path = atomic_write_text(layout.similarity(block, dataset, "csv"), csv_text(labels, [[_number(v) for v in row] for row in matrix]))
    scope = "all data sets" if dataset is None else dataset
    title = f"Inter-expert cosine similarity, block {block}, {scope} ({counted(analysis.images(dataset), 'image')})"
    png_path = plot_matrix(matrix, labels, layout.similarity(block, dataset, "png"), title, vmin=-1.0, vmax=1.0)
    return [csv_path, png_path]


def _write_utilisation(layout: OutputLayout, analysis: ExpertAnalysis) -> list[Path]:
    rows = []
    for dataset in analysis.datasets:
        for block in analysis.blocks:
            used = analysis.utilisation(block, dataset)
            for n in range(analysis.num_experts):
                rows.append([dataset, block, n + 1, _number(used["top1_share"][n]), _number(used["topk_share"][n])])
    paths = [atomic_write_text(layout.utilisation_csv, csv_text(["dataset", "block", "expert", "top1_share", "topk_share"], rows))]
    labels = expert_labels(analysis.num_experts)
    for block in analysis.blocks:
        groups = {}
        for dataset in analysis.datasets:
            topk = analysis.utilisation(block, dataset)["topk_share"]
            groups[dataset] = {label: (None if not math.isfinite(v) else 100.0 * v) for label, v in zip(labels, topk)}
        paths.append(
            plot_bars(
                groups,
                layout.utilisation_plot(block),
                f"Top-{analysis.top_k} expert utilisation, block {block}",
                "share of routing slots (%)",
            )
        )
    return paths


def _statistics_rows(analysis: ExpertAnalysis) -> list[tuple[str, int, dict[str, float]]]:
    """(data set or 'all', expert 1..K, values) for every data set, then pooled."""
    rows = []
    for dataset in [*analysis.datasets, None]:
        values = analysis.statistics(dataset)
        for n in range(analysis.num_experts):
            rows.append((dataset or ALL_DATASETS, n + 1, {key: values[key][n] for key in values}))
    return rows


def statistics_markdown(analysis: ExpertAnalysis, pipeline_check: bool) -> str:
    lines = [f"# Expert statistics at block {analysis.statistics_block} (top-1 patches)", ""]
    if pipeline_check:
        lines += [PIPELINE_CHECK_WARNING, ""]
    lines += [
        "Per expert, the mean over the image patches whose top-1 expert it is: Sobel gradient "
        "magnitude (edge strength), pixel standard deviation (contrast) and Shannon entropy of the "
        "256-bin gray-level histogram (complexity), on the grayscale model input in [0, 255] (as Tab. 14).",
        "",
    ]
    for dataset in [*analysis.datasets, None]:
        values = analysis.statistics(dataset)
        total = int(values["patches"].sum())
        lines += [f"## {dataset or 'all data sets'} ({counted(analysis.images(dataset), 'image')})", ""]
        rows = []
        for n in range(analysis.num_experts):
            share = f"{values['patches'][n] / total:.1%}" if total else "n/a"
            cells = ["n/a" if not math.isfinite(values[key][n]) else f"{values[key][n]:.2f}" for key, _ in _STATISTIC_COLUMNS]
            rows.append([f"expert {n + 1}", *cells, f"{int(values['patches'][n])} ({share})"])
        lines += _markdown_table(["expert", *[label for _, label in _STATISTIC_COLUMNS], "patches"], rows) + [""]
    return "\n".join(lines)


def _write_statistics(layout: OutputLayout, analysis: ExpertAnalysis, pipeline_check: bool) -> list[Path]:
    header = ["dataset", "block", "expert", "patches", "gradient", "std", "entropy"]
    rows = [
        [dataset, analysis.statistics_block, expert, int(values["patches"]), *[_number(values[key]) for key, _ in _STATISTIC_COLUMNS]]
        for dataset, expert, values in _statistics_rows(analysis)
    ]
    return [
        atomic_write_text(layout.statistics_csv, csv_text(header, rows)),
        atomic_write_text(layout.statistics_md, statistics_markdown(analysis, pipeline_check)),
    ]


def analysis_numbers(analysis: ExpertAnalysis) -> dict[str, Any]:
    """Every number of the analysis as JSON-ready nested dicts (NaN stays NaN until written)."""
    scopes = {ALL_DATASETS: None, **{name: name for name in analysis.datasets}}
    return {
        "similarity": {
            scope: {
                str(block): {"mean": analysis.similarity(block, name), "images": analysis.similarity_count(block, name)}
                for block in analysis.blocks
            }
            for scope, name in scopes.items()
        },
        "utilisation": {
            scope: {str(block): analysis.utilisation(block, name) for block in analysis.blocks} for scope, name in scopes.items()
        },
        "statistics": {scope: analysis.statistics(name) for scope, name in scopes.items()},
    }


def index_markdown(
    analysis: ExpertAnalysis,
    meta: Mapping[str, Any],
    datasets: Mapping[str, Mapping[str, Any]],
    written: Sequence[Path],
    out_dir: Path,
    errors: Sequence[Mapping[str, str]],
) -> str:
    blocks = ", ".join(map(str, analysis.blocks))
    lines = ["# Expert analysis (MoECLIP)", ""]
    if meta.get("pipeline_check"):
        lines += ["## PIPELINE CHECK: RANDOM BACKBONE WEIGHTS", "", PIPELINE_CHECK_WARNING, ""]
    lines += [
        f"- checkpoint: `{meta.get('checkpoint', 'n/a')}`",
        f"- backbone: {meta.get('backbone', 'n/a')} ({meta.get('weights', 'n/a')} weights), image size {meta.get('image_size', 'n/a')}",
        f"- MoE blocks: {blocks}; K = {analysis.num_experts} experts, top-{analysis.top_k} routing; "
        f"statistics at block {analysis.statistics_block}",
        "",
    ]
    lines += _markdown_table(
        ["data set", "source", "images analysed"],
        [[name, f"`{info.get('spec', '')}`", str(analysis.images(name))] for name, info in datasets.items()],
    )
    if all(not analysis.similarity_count(block).any() for block in analysis.blocks):
        lines += ["", "Note: no expert had a non-zero mean output, so the cosine similarities are undefined (untrained experts?)."]
    relative = sorted(str(path.relative_to(out_dir)) for path in written)
    selection = [path for path in relative if path.startswith("selection")]
    lines += [
        "",
        "## Files",
        "",
        f"- `selection/<data set>/<image>_block<B>_top<r>.png` ({counted(len(selection), 'file')}): each patch tinted by its "
        "top-1 / top-2 expert, with the share of patches and mean renormalised routing weight per expert in the "
        "legend (Fig. 3, 12-15); experts are numbered from 1 everywhere.",
        "- `similarity_block<B>.csv|png` (all data sets) and `similarity_<data set>_block<B>.csv|png`: mean over "
        "images of the cosine between the experts' mean outputs over their top-k patches (Fig. 5, 10); empty "
        "cells: no image where both experts were used.",
        "- `utilisation.csv` (dataset, block, expert, top1_share, topk_share) and `utilisation_block<B>.png`: "
        "share of patches whose top-1 expert it is, and share of the top-k routing slots (Fig. 9).",
        f"- `expert_statistics.csv|md`: gradient, contrast and entropy of each expert's top-1 patches at block "
        f"{analysis.statistics_block} (Tab. 14).",
        "- `analysis.json`: all numbers, with the number of images behind each similarity entry.",
    ]
    if errors:
        lines += ["", f"## Skipped images ({len(errors)})", ""]
        lines += [f"- `{error['path']}`: {error['error']}" for error in errors]
    return "\n".join(lines) + "\n"


def write_analysis(
    layout: OutputLayout,
    analysis: ExpertAnalysis,
    meta: Mapping[str, Any],
    datasets: Mapping[str, Mapping[str, Any]],
    selection_files: Sequence[Path],
    errors: Sequence[Mapping[str, str]],
) -> list[Path]:
    """Write the similarity, utilisation and statistics files, then analysis.md and
    analysis.json (which list everything written, ``selection_files`` included).

    Args:
        meta: run metadata (method, backbone, weights, image_size, pipeline_check, checkpoint).
        datasets: name -> {"spec": KIND:PATH, ...} in run order.
        errors: {"path", "error"} of the skipped images.
    """
    written = list(selection_files)
    for block in analysis.blocks:
        for dataset in [None, *analysis.datasets]:
            written += _write_similarity(layout, analysis, block, dataset)
    written += _write_utilisation(layout, analysis)
    written += _write_statistics(layout, analysis, bool(meta.get("pipeline_check")))
    written += [layout.index_md, layout.index_json]
    atomic_write_text(layout.index_md, index_markdown(analysis, meta, datasets, written, layout.out_dir, errors))
    numbers = {
        **dict(meta),
        "blocks": [_layer_value(block) for block in analysis.blocks],
        "num_experts": analysis.num_experts,
        "top_k": analysis.top_k,
        "statistics_block": _layer_value(analysis.statistics_block),
        "datasets": {name: {**dict(info), "images": analysis.images(name)} for name, info in datasets.items()},
        **analysis_numbers(analysis),
        "errors": list(errors),
        "files": sorted(str(path.relative_to(layout.out_dir)) for path in written),
    }
    atomic_write_json(layout.index_json, numbers)
    return written
