"""Set ("transductive") scoring for methods that score images against each other (MuSc).

A method with ``scores_sets`` sees a set of images of one product at once. This module
is the path of `zsad predict` and `zsad test` for such methods, kept apart from the
per-image path: tokens are extracted batch by batch into the method's token store
(spilled to disk beyond its memory setting), each set is scored as a whole, the image
scores are re-scored over the whole category (all its subsets), and the results go
through the same writers as the per-image path.

Sets: `zsad test` = one category's test split; `zsad predict` = the images of the call,
or one set per category folder when ``--class-names`` names them. ``set_size`` cuts a
set into label-free subsets (seeded shuffle of the sorted paths). Normal reference images
(``--reference``) join every subset of `zsad predict` and get no output rows.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from ..data import AnomalyDataset, collate
from ..data.transforms import EvalTransform
from ..discovery import OUTPUT_MARKER
from ..fileio import check_can_write
from ..imageio import ImageReadError, read_image, read_image_reduced
from ..map_files import write_overlay, write_raw_map
from ..methods.musc import set_indices, upsample_maps
from ..output_lock import claim_output_folder
from ..reports import mean_over_classes
from ..score_table import ScoreTable
from .evaluation import ClassPredictions, EvaluationResult, _class_metrics, _save_panel
from .map_spill import SpilledMaps
from .prediction import MAP_DIR, OVERLAY_DIR, PredictionSummary, output_names
from .runtime import autocast, image_counter

SUGGEST_SET_METHOD_FROM = 10  # `zsad predict` with the default method suggests MuSc from this many images
SET_METHOD_HINT = (
    "hint: {n} images of one product: `--method musc` scores them against each other (training-free, "
    "usually stronger than the default); it assumes most images are normal and the defects varied"
)


@dataclass
class SetScores:
    """One set scored: patch_maps (N, h, w) raw in [0, 2]; raw_scores (N,) the upsampled
    map maxima; embeddings (N, d_t) for re-scoring."""

    patch_maps: torch.Tensor
    raw_scores: torch.Tensor
    embeddings: torch.Tensor


def score_set(detector, batches: Iterable[torch.Tensor], n_images: int, device: torch.device, precision: str = "fp32",
              spill_dir: Path | None = None, show_progress: bool = False, label: str = "set") -> SetScores:
    """Extract the tokens of ``batches`` ((B, 3, S, S) images, N in all) and score them as
    one set with ``detector`` (a method with ``scores_sets``)."""
    embeddings = []
    size = None
    with detector.new_store(spill_dir) as store:
        for images in batches:
            size = images.shape[-1]
            with torch.no_grad(), autocast(device, precision):
                tokens, embedded = detector.set_tokens(images.to(device))
            store.append(tokens)
            embeddings.append(embedded.float().cpu())
        counter = image_counter(detector.progress_steps(n_images), f"mutual scoring {label}", enabled=show_progress)
        counter.unit = "block"
        try:
            patch_maps = detector.patch_maps(store, device, lambda done: counter.update(done - counter.n))
        finally:
            counter.close()
    return SetScores(patch_maps, detector.image_scores(patch_maps, size), torch.cat(embeddings))


# ----------------------------------------------------------------- zsad predict
def group_by_class_folder(paths: Sequence[Path], class_keys: Iterable[str]) -> dict[str, list[Path]]:
    """One set per category: each path goes to the nearest enclosing folder whose name is a
    key of ``class_keys`` (the --class-names file); the others form one set, ""."""
    keys = set(class_keys)
    groups: dict[str, list[Path]] = {}
    for path in paths:
        key = next((parent.name for parent in Path(path).parents if parent.name in keys), "")
        groups.setdefault(key, []).append(path)
    return groups


def predict_sets(
    predictor, groups: dict[str, list[Path]], out_dir: Path, threshold: float, set_size: int | None = None,
    references: Sequence[Path] = (), batch_size: int = 8, overwrite: bool = False, resume: bool = False,
    show_progress: bool = True, meta: dict[str, Any] | None = None,
) -> PredictionSummary:
    """`zsad predict` for a set method: every group scored as a set (cut into subsets of
    ``set_size``), the same files as the per-image path (overlays, raw maps, scores.csv,
    scores.json). ``resume`` scores every set again (scores are set-relative) and writes
    the rows that the interrupted run did not."""
    detector, side, device = predictor.detector, predictor.image_size, predictor.device
    paths = [path for group in groups.values() for path in group]
    names = dict(zip(paths, output_names(paths)))
    reference_images = [_decode(path, side) for path in references]
    for path, item in zip(references, reference_images):
        if isinstance(item, ImageReadError):
            raise ImageReadError(path, item.reason)
    meta = {**(meta or {}), "transductive": True, "set_size": set_size, "references_in_set": len(references),
            "sets": {key or "(all)": len(group) for key, group in groups.items()}}
    provenance = {key: meta[key] for key in ("method", "backbone", "weights") if key in meta}
    transform = EvalTransform(side)
    with claim_output_folder(out_dir), ScoreTable(out_dir, provenance, {**meta, "threshold": threshold}, overwrite, resume) as table:
        (out_dir / OUTPUT_MARKER).touch()
        done = table.done_paths
        replace = overwrite or resume
        if not replace:
            check_can_write([out_dir / folder / f"{names[p]}.png" for p in paths for folder in (OVERLAY_DIR, MAP_DIR)], overwrite)
        (out_dir / OVERLAY_DIR).mkdir(exist_ok=True)
        (out_dir / MAP_DIR).mkdir(exist_ok=True)
        for key, group in groups.items():
            decoded = [_decode(path, side) for path in group]
            table.add([{"path": str(p), "error": item.reason} for p, item in zip(group, decoded)
                       if isinstance(item, ImageReadError) and str(p) not in done])
            readable = sorted((str(p), p, item) for p, item in zip(group, decoded) if not isinstance(item, ImageReadError))
            subsets = set_indices(len(readable), set_size)
            scored: dict[int, tuple[torch.Tensor, float]] = {}
            embeddings, raw = {}, {}
            for number, subset in enumerate(subsets, start=1):
                members = [readable[i][2][0] for i in subset] + [image for image, _ in reference_images]
                result = score_set(detector, _batches(members, transform, batch_size), len(members), device, predictor.precision,
                                   show_progress=show_progress, label=f"{key or 'set'} {number}/{len(subsets)}")
                for row, index in enumerate(subset):
                    scored[index] = result.patch_maps[row]
                    raw[index], embeddings[index] = result.raw_scores[row], result.embeddings[row]
            if not readable:
                continue
            order = sorted(raw)
            final = detector.final_scores(torch.stack([raw[i] for i in order]), torch.stack([embeddings[i] for i in order]))
            rows = []
            for index, score in zip(order, final.tolist()):
                _, path, (image, full_size) = readable[index]
                if str(path) in done:
                    continue
                low = (upsample_maps(scored[index][None], side)[0] / 2).clamp(0, 1).numpy()
                overlay, raw_map = out_dir / OVERLAY_DIR / f"{names[path]}.png", out_dir / MAP_DIR / f"{names[path]}.png"
                full = image if image.size == full_size else read_image(path)
                write_overlay(overlay, full, low, score, threshold, provenance, overwrite=replace)
                write_raw_map(raw_map, low, full_size[::-1], provenance, overwrite=replace)
                rows.append({"path": str(path), "score": score, "label": int(score >= threshold), "error": "",
                             "overlay": str(overlay.relative_to(out_dir)), "map": str(raw_map.relative_to(out_dir))})
            table.add(rows)
        written = [table.csv_path, table.finish(complete=True, n_total=len(paths))]
    position = {str(path): i for i, path in enumerate(paths)}
    rows = sorted(table.rows, key=lambda row: position.get(row["path"], len(position)))
    return PredictionSummary(rows=rows, written=written, n_previous=table.n_previous)


def _decode(path: Path, side: int):
    try:
        return read_image_reduced(path, side)
    except ImageReadError as error:
        return error


def _batches(images: list, transform: EvalTransform, batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield torch.stack([transform(image, None)[0] for image in images[start : start + batch_size]])


# ----------------------------------------------------------------- zsad test
def evaluate_sets(
    detector, dataset: AnomalyDataset, device: torch.device, batch_size: int = 8, num_workers: int = 0,
    precision: str = "fp32", set_size: int | None = None, save_maps: int = 0, maps_dir: Path | None = None,
    show_progress: bool = True, spill_dir: Path | None = None,
) -> EvaluationResult:
    """`zsad test` for a set method: one set per category (its whole test split, or
    label-free subsets of ``set_size``), RsCIN over the category, the protocol's metrics."""
    detector.eval().to(device)
    by_class: dict[str, list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        by_class.setdefault(sample.class_name, []).append(index)
    errors: list[dict[str, str]] = []
    metrics = {}
    with tempfile.TemporaryDirectory(prefix="zsad-maps-", dir=spill_dir) as folder:
        for number, key in enumerate(sorted(by_class)):
            indices = sorted(by_class[key], key=lambda i: str(dataset.samples[i].image_path))
            predictions = ClassPredictions()
            raw, embeddings = [], []
            for subset in set_indices(len(indices), set_size):
                members = [indices[i] for i in subset]
                loaded: list = []  # the readable items' (label, mask, path) in extraction order
                loader = DataLoader(Subset(dataset, members), batch_size=batch_size, num_workers=num_workers, collate_fn=collate)

                def batches(loader=loader, loaded=loaded) -> Iterable[torch.Tensor]:
                    for batch in loader:
                        errors.extend({"path": path, "error": error} for path, error in batch.unreadable)
                        loaded.extend(zip(batch.labels.tolist(), (batch.masks[:, 0] > 0.5).numpy(), batch.paths, batch.has_mask.tolist()))
                        if len(batch):
                            yield batch.images

                n_readable = len(members)  # progress total; unreadable items only shorten the set
                result = score_set(detector, batches(), n_readable, device, precision, show_progress=show_progress, label=key)
                maps = upsample_maps(result.patch_maps, dataset.image_size) / 2
                for row, (label, mask, path, has_mask) in enumerate(loaded):
                    predictions.labels.append(int(label))
                    if dataset.has_masks:
                        if predictions.maps is None:
                            predictions.maps = SpilledMaps(Path(folder), f"class{number:04d}", tuple(maps.shape[-2:]))
                        predictions.maps.append(maps[row].clamp(0, 1).numpy(), mask)
                    if maps_dir is not None and row < save_maps:
                        panel_mask = mask if has_mask else None
                        _save_panel(maps_dir, path, key, maps[row].clamp(0, 1).numpy(), panel_mask, float(result.raw_scores[row] / 2))
                raw.append(result.raw_scores)
                embeddings.append(result.embeddings)
            predictions.scores = detector.final_scores(torch.cat(raw), torch.cat(embeddings), dataset.kind).tolist()
            if predictions.maps is not None:
                predictions.maps.close()
            metrics[key] = {
                **_class_metrics(predictions, dataset.has_masks, "none"),
                "set_sizes": [len(s) for s in set_indices(len(indices), set_size)],
            }
    report = {
        "dataset": f"{dataset.kind}:{dataset.root}",
        "score_normalisation": "none",
        "transductive": "each image scored against the other test images of its category (MuSc); "
        "not comparable one for one with per-image methods",
        "per_class": metrics,
        "mean": mean_over_classes(metrics),
        "n_errors": len(errors),
    }
    return EvaluationResult(report=report, errors=errors)
