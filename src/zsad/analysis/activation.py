"""Per-image expert routing: how often each expert of each pool is chosen, per data set
(PromptMoE Fig. 6; the training curves of Fig. 7 are in :mod:`.training_curves`).

Routing is read from ``output.routing``: ``{"<block>/<pool>": Routing}`` with one decision
per image (L = 1: ``topk_index`` (B, 1, k), ``probabilities`` (B, 1, E)), as PromptMoE's
prompt pools route.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..data import collate
from ..engine.predictor import Predictor
from ..engine.runtime import progress
from ..fileio import atomic_write_json, atomic_write_text, check_can_write, csv_text
from ..methods.base import AnomalyDetector, Routing
from .plots import plot_bars

ACTIVATION_CSV = "expert_activation.csv"
ACTIVATION_PNG = "expert_activation.png"
ALL_LAYERS = "all"


def split_routing_key(key: str) -> tuple[str, str]:
    """``"12/normal"`` -> (``"12"``, ``"normal"``)."""
    layer, _, pool = key.partition("/")
    if not pool:
        raise ValueError(f"routing key {key!r} is not '<block>/<pool>'")
    return layer, pool


@dataclass
class ActivationCounter:
    """Counts, per data set and routing key, how many images kept each expert.

    counts[dataset][key]: int64 (E,) images that had the expert among their top-k.
    images[dataset]: images seen.
    """

    counts: dict[str, dict[str, np.ndarray]] = field(default_factory=lambda: defaultdict(dict))
    images: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, dataset: str, routing: Mapping[str, Routing]) -> None:
        """Add one batch's per-image routing decisions ({"<block>/<pool>": Routing})."""
        if not routing:
            raise ValueError("the model returned no routing decisions: this method has no router to analyse")
        batch = None
        for key, decision in routing.items():
            split_routing_key(key)
            if decision.topk_index.shape[1] != 1:
                raise ValueError(f"routing {key!r} routes {decision.topk_index.shape[1]} tokens per image, not one")
            chosen = torch.zeros(decision.topk_index.shape[0], decision.num_experts, dtype=torch.int64)
            chosen.scatter_(1, decision.topk_index[:, 0].long().cpu(), 1)
            totals = chosen.sum(dim=0).numpy()
            previous = self.counts[dataset].get(key)
            self.counts[dataset][key] = totals if previous is None else previous + totals
            batch = decision.topk_index.shape[0]
        self.images[dataset] += batch

    def rows(self) -> list[dict[str, Any]]:
        """CSV rows: dataset, layer (a block or ``all``), pool, expert (1-based),
        activations, images, frequency = activations / (images x layers summed)."""
        rows: list[dict[str, Any]] = []
        for dataset, per_key in self.counts.items():
            images = self.images[dataset]
            pooled: dict[str, list[np.ndarray]] = defaultdict(list)
            for key, counts in per_key.items():
                layer, pool = split_routing_key(key)
                pooled[pool].append(counts)
                rows += _expert_rows(dataset, layer, pool, counts, images, 1)
            for pool, layers in pooled.items():
                rows += _expert_rows(dataset, ALL_LAYERS, pool, np.sum(layers, axis=0), images, len(layers))
        return rows


def _expert_rows(dataset: str, layer: str, pool: str, counts: np.ndarray, images: int, layers: int) -> list[dict[str, Any]]:
    return [
        {
            "dataset": dataset, "layer": layer, "pool": pool, "expert": expert + 1,
            "activations": int(count), "images": images, "frequency": float(count) / (images * layers),
        }
        for expert, count in enumerate(counts)
    ]


def activation_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: one group per (pool, expert) over all layers, one bar per data set."""
    groups: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["layer"] == ALL_LAYERS:
            groups.setdefault(f"{row['pool']} E{row['expert']}", {})[row["dataset"]] = row["frequency"]
    return plot_bars(groups, path, "Expert activation frequency (all layers)", "fraction of routings")


@dataclass
class ActivationRun:
    rows: list[dict[str, Any]]
    written: list[Path]
    errors: list[dict[str, str]]


def routes_per_image(model: AnomalyDetector, device: torch.device) -> bool:
    """Whether ``model`` routes once per image (every Routing has L = 1), read from one
    forward pass on a blank image; False for token routing or no routing."""
    size = model.backbone.image_size
    with torch.no_grad():
        routing = model.eval()(torch.zeros(1, 3, size, size, device=device), ["object"]).routing
    return bool(routing) and all(decision.topk_index.shape[1] == 1 for decision in routing.values())


def analyze_expert_activation(
    predictor: Predictor,
    data: Sequence[Any],
    out_dir: Path,
    batch_size: int = 8,
    num_workers: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> ActivationRun:
    """Route every image of ``data`` (from ``load_analysis_data``) and write
    expert_activation.csv / .png / .json into ``out_dir``. Unreadable images are skipped
    and returned in ``errors``."""
    out_dir = Path(out_dir)
    planned = [out_dir / ACTIVATION_CSV, out_dir / ACTIVATION_PNG, out_dir / "expert_activation.json"]
    check_can_write(planned, overwrite)
    model, counter, errors = predictor.detector.eval(), ActivationCounter(), []
    with torch.no_grad():
        for item in data:
            loader = DataLoader(Subset(item.dataset, item.indices), batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
            for batch in progress(loader, f"routing {item.name}", total=len(loader), enabled=show_progress):
                errors += [{"path": path, "error": error} for path, error in batch.unreadable]
                if not len(batch):
                    continue
                words = [predictor.class_names.resolve(key) for key in batch.class_names]
                counter.add(item.name, model(batch.images.to(predictor.device), words).routing)
    rows = counter.rows()
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["dataset", "layer", "pool", "expert", "activations", "images", "frequency"]
    written = [
        atomic_write_text(out_dir / ACTIVATION_CSV, csv_text(columns, rows)),
        activation_chart(rows, out_dir / ACTIVATION_PNG),
        atomic_write_json(out_dir / "expert_activation.json", {"meta": meta or {}, "rows": rows, "errors": errors}),
    ]
    return ActivationRun(rows, written, errors)

