"""``zsad analyze experts``: run a routed method over data sets and write the expert analyses."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..data import AnomalyDataset, build_dataset, collate, parse_data_spec
from ..engine.predictor import Predictor
from ..engine.runtime import progress
from ..errors import InvalidInputError
from ..fileio import check_can_write
from ..methods.base import AnomalyDetector
from .experts import ExpertAnalysis, ExpertAnalysisAccumulator, selection_maps
from .patches import to_grayscale, to_uint8_rgb
from .report import OutputLayout, write_analysis, write_selection_maps

__all__ = ["AnalysisData", "ExpertAnalysisRun", "analyze_experts", "default_statistics_block", "load_analysis_data"]

SELECTION_RANKS = 2


@dataclass
class AnalysisData:
    """One data set of the run: ``name`` (file-name safe), its ``spec``, the dataset and
    the ``indices`` analysed (in order; the first ones get selection maps)."""

    name: str
    spec: str
    dataset: AnomalyDataset
    indices: list[int]


@dataclass
class ExpertAnalysisRun:
    analysis: ExpertAnalysis
    written: list[Path]
    errors: list[dict[str, str]]


def default_statistics_block(blocks: Sequence[str]) -> str:
    """The third tapped block (block 18 of ViT-L's 6/12/18/24), or the last if fewer."""
    return blocks[min(2, len(blocks) - 1)]


def spread_indices(total: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(total)`` (all when ``limit`` is None or
    not smaller), so that a capped run still sees every class of a class-sorted data set."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, limit).round()})


def load_analysis_data(
    specs: Sequence[str], image_size: int, classes: Sequence[str] | None = None, max_images: int | None = None
) -> list[AnalysisData]:
    """Read every ``KIND:PATH`` spec. ``classes`` keeps those categories in each data set
    that has them (a name found in no data set is an error); ``max_images`` caps each set."""
    if not specs:
        raise InvalidInputError("give at least one --data KIND:PATH")
    loaded: list[AnalysisData] = []
    names: set[str] = set()
    unused = set(classes or ())
    for spec in specs:
        kind, _ = parse_data_spec(spec)
        dataset = build_dataset(spec, image_size=image_size, split="test")
        if classes:
            wanted = [name for name in classes if name in dataset.classes]
            unused -= set(wanted)
            samples = [sample for sample in dataset.samples if sample.class_name in wanted]
            dataset = AnomalyDataset(dataset.kind, dataset.root, samples, dataset.has_masks, dataset.image_size, dataset.transform)
        name = kind
        suffix = 2
        while name in names:
            name, suffix = f"{kind}_{suffix}", suffix + 1
        names.add(name)
        loaded.append(AnalysisData(name, spec, dataset, spread_indices(len(dataset), max_images)))
    if unused:
        raise InvalidInputError(f"classes {sorted(unused)} are in none of the data sets")
    if not any(data.indices for data in loaded):
        raise InvalidInputError("no images to analyse (check --classes)")
    return loaded


def _image_name(data: AnalysisData, index: int) -> str:
    """File-name safe '<class>_<folder>_<stem>' of a sample (folder = e.g. the defect kind)."""
    sample = data.dataset.samples[index]
    path = Path(sample.image_path)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{sample.class_name}_{path.parent.name}_{path.stem}")


def _selection_names(data: AnalysisData, count: int) -> dict[int, str]:
    """Dataset index -> unique image name, for the first ``count`` analysed images."""
    names: dict[int, str] = {}
    for index in data.indices[:count]:
        name, candidate, suffix = _image_name(data, index), _image_name(data, index), 2
        while candidate in names.values():
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        names[index] = candidate
    return names


@dataclass
class RoutingLayout:
    """What a routed method reports: its routed layers (names), K experts, top-k."""

    layers: tuple[str, ...]
    num_experts: int
    top_k: int


def routing_layout(model: AnomalyDetector, device: torch.device) -> RoutingLayout:
    """Read the routing layout from one forward pass on a blank image; a method that
    reports no routing cannot be analysed."""
    size = model.backbone.image_size
    with torch.no_grad():
        routing = model(torch.zeros(1, 3, size, size, device=device), ["object"]).routing
    if not routing:
        raise InvalidInputError(f"expert analyses need a method that routes tokens to experts; '{model.name}' reports no routing")
    first = next(iter(routing.values()))
    return RoutingLayout(tuple(routing), first.num_experts, first.top_k)


def _planned_files(layout: OutputLayout, blocks: Sequence[str], selection_names: dict[str, dict[int, str]], ranks: int) -> list[Path]:
    """Every file the run will write: the summaries and the selection maps."""
    planned = layout.summary_files(blocks, list(selection_names))
    for dataset, names in selection_names.items():
        for name in names.values():
            planned += [layout.selection(dataset, name, block, rank) for block in blocks for rank in range(1, ranks + 1)]
    return planned


def analyze_experts(
    predictor: Predictor,
    data: Sequence[AnalysisData],
    out_dir: Path,
    statistics_block: int | None = None,
    selection_count: int = 4,
    batch_size: int = 8,
    num_workers: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> ExpertAnalysisRun:
    """Route every analysed image through a routed method and write all analyses.

    Args:
        predictor: a loaded predictor whose method reports routing (e.g. MoECLIP).
        data: from :func:`load_analysis_data`.
        statistics_block: MoE block of the Tab. 14 statistics (default: the third).
        selection_count: patch-selection maps for this many first images per data set
            (an unreadable one is skipped, not replaced).
    Refuses (OutputExistsError) before computing anything if an output exists and not
    ``overwrite``. Unreadable images are skipped and returned in ``errors``.
    """
    model = predictor.detector.eval()
    layout_of_routing = routing_layout(model, predictor.device)
    blocks = layout_of_routing.layers
    statistics_block = default_statistics_block(blocks) if statistics_block is None else str(statistics_block)
    if statistics_block not in blocks:
        raise InvalidInputError(f"--layer {statistics_block} is not routed; the routed blocks are {', '.join(blocks)}")
    num_experts, top_k = layout_of_routing.num_experts, layout_of_routing.top_k
    ranks = min(SELECTION_RANKS, top_k)

    layout = OutputLayout(Path(out_dir))
    selection_names = {item.name: _selection_names(item, selection_count) for item in data}
    check_can_write(_planned_files(layout, blocks, selection_names, ranks), overwrite)

    accumulator = ExpertAnalysisAccumulator(blocks, num_experts, top_k, statistics_block, model.backbone.patch_size)
    errors: list[dict[str, str]] = []
    selection_files: list[Path] = []
    with model.keeping_expert_outputs(), torch.no_grad():
        for item in data:
            accumulator.add_dataset(item.name)
            loader = DataLoader(Subset(item.dataset, item.indices), batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
            positions = iter(item.indices)
            for batch in progress(loader, f"experts {item.name}", total=len(loader), enabled=show_progress):
                indices = [next(positions) for _ in range(batch.size)]
                errors += [{"path": path, "error": error} for path, error in batch.unreadable]
                if not len(batch):
                    continue
                images = batch.images
                words = [predictor.class_names.resolve(key) for key in batch.class_names]
                output = model(images.to(predictor.device), words)
                routing = output.routing
                rgb = [to_uint8_rgb(image) for image in images]
                patched = model.backbone.fit_to_patch_grid(images)  # the pixels the patches saw
                accumulator.add(item.name, routing, np.stack([to_grayscale(to_uint8_rgb(picture)) for picture in patched]))
                chosen = [
                    (row, selection_names[item.name][indices[i]])
                    for row, i in enumerate(batch.positions)
                    if indices[i] in selection_names[item.name]
                ]
                for block in blocks if chosen else ():
                    experts, weights = selection_maps(routing[block], ranks)
                    for row, name in chosen:
                        selection_files += write_selection_maps(
                            layout, item.name, name, rgb[row], experts[row], weights[row], block, num_experts
                        )
    analysis = accumulator.result()
    datasets = {item.name: {"spec": item.spec, "selected_images": len(item.indices)} for item in data}
    written = write_analysis(layout, analysis, meta or {}, datasets, selection_files, errors)
    return ExpertAnalysisRun(analysis, written, errors)
