"""t-SNE of the expert prompts' mean tokens, and how dispersed each pool is (PromptMoE Fig. 8).

Each expert prompt (E, M, D) of a pool is reduced to its mean token (D,). All mean tokens
of the model (every prompt layer, every pool) are embedded together in 2-D by t-SNE
(scikit-learn, exact gradient, euclidean distance, PCA initialisation, seeded), so that
the points of every layer share one set of coordinates. The paper's claim, "normal
converging, abnormal diverging", is checked in the ORIGINAL token space, not in the
t-SNE plane (t-SNE distorts distances): the mean pairwise cosine distance
``1 - cos(m_i, m_j)`` over the experts i < j of each pool of each layer.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError, ZsadError
from ..fileio import atomic_write_json, atomic_write_text, check_can_write
from ..viz import new_figure, save_figure

__all__ = [
    "ExpertTSNE",
    "MissingAnalysisDependencyError",
    "claim_holds",
    "default_perplexity",
    "dispersion_report",
    "expert_mean_tokens",
    "expert_tsne",
    "mean_pairwise_cosine_distance",
    "tsne_embedding",
    "tsne_files",
    "write_expert_tsne",
]

TSNE_CSV = "expert_tsne.csv"
TSNE_PNG = "expert_tsne.png"
DISPERSION_CSV = "expert_dispersion.csv"
TSNE_JSON = "expert_tsne.json"
ALL_LAYERS = "all"
# The largest perplexity used by default: scikit-learn's own default.
MAX_DEFAULT_PERPLEXITY = 30.0
POOL_STYLES = {"normal": ("tab:blue", "o"), "abnormal": ("tab:red", "^"), "shared": ("tab:purple", "s")}


class MissingAnalysisDependencyError(ZsadError, ImportError):
    """An analysis needs a package of the ``analysis`` extra that is not installed."""


@dataclass
class ExpertPoints:
    """The mean token of every expert prompt, in a fixed order (layer, pool, expert).

    layers, pools: (N,) names; experts: (N,) 1-based expert numbers; vectors: float64
    (N, D) mean tokens.
    """

    layers: list[str]
    pools: list[str]
    experts: list[int]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.layers)

    def select(self, layer: str, pool: str) -> np.ndarray:
        """(E, D) the mean tokens of one pool of one layer."""
        rows = [i for i in range(len(self)) if self.layers[i] == layer and self.pools[i] == pool]
        return self.vectors[rows]


@dataclass
class ExpertTSNE:
    """The result: ``rows`` (layer, pool, expert, mean_token_norm, x, y), one per expert
    prompt; ``dispersion`` (layer, pool, experts, mean_pairwise_cosine_distance), per pool
    and layer plus the layer mean (layer ``all``); the t-SNE ``perplexity`` and ``seed``."""

    rows: list[dict[str, Any]]
    dispersion: list[dict[str, Any]]
    perplexity: float
    seed: int


def expert_mean_tokens(prompts: Mapping[str, Mapping[str, torch.Tensor]]) -> ExpertPoints:
    """``{layer: {pool: (E, M, D)}}`` (a method's ``expert_prompts()``) -> the mean token of
    each expert prompt, mean over its M tokens, in float64."""
    layers: list[str] = []
    pools: list[str] = []
    experts: list[int] = []
    vectors: list[np.ndarray] = []
    for layer, layer_pools in prompts.items():
        for pool, tokens in layer_pools.items():
            if tokens.dim() != 3:
                raise ValueError(f"expert prompts {layer}/{pool} must be (E, M, D), got {tuple(tokens.shape)}")
            means = tokens.detach().double().mean(dim=1).cpu().numpy()  # (E, D)
            layers += [str(layer)] * len(means)
            pools += [pool] * len(means)
            experts += list(range(1, len(means) + 1))
            vectors.append(means)
    if not vectors:
        raise ValueError("no expert prompts")
    return ExpertPoints(layers, pools, experts, np.concatenate(vectors))


def mean_pairwise_cosine_distance(vectors: np.ndarray) -> float:
    """Mean of ``1 - cos(v_i, v_j)`` over the pairs i < j of the rows of ``vectors`` (E, D):
    0 when all point the same way, 1 when orthogonal, up to 2. NaN for fewer than two rows.
    A zero row has no direction: it is an error."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) < 2:
        return math.nan
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(norms == 0):
        raise ValueError("a mean token is the zero vector: its cosine distance is undefined")
    unit = vectors / norms[:, None]
    upper = np.triu_indices(len(vectors), k=1)
    return float(np.mean(1.0 - (unit @ unit.T)[upper]))


def default_perplexity(points: int) -> float:
    """A valid perplexity for ``points`` points: scikit-learn's 30, or (N - 1) / 3 when
    fewer than 91 points (t-SNE needs perplexity < N; about N / 3 keeps every point's
    neighbourhood smaller than the set)."""
    return min(MAX_DEFAULT_PERPLEXITY, (points - 1) / 3)


def _tsne_class():
    try:
        from sklearn.manifold import TSNE
    except ImportError as error:
        raise MissingAnalysisDependencyError(
            "the t-SNE of the expert prompts needs scikit-learn: pip install 'zsad[analysis]'"
        ) from error
    return TSNE


def tsne_embedding(vectors: np.ndarray, seed: int = 0, perplexity: float | None = None) -> tuple[np.ndarray, float]:
    """t-SNE of ``vectors`` (N, D) into 2-D -> ((N, 2) coordinates, the perplexity used).

    scikit-learn's TSNE with the exact gradient (N is small: layers x pools x experts), the
    euclidean distance, PCA initialisation (scikit-learn's default: it keeps the global
    layout, which is what compact vs dispersed pools are read from) and
    ``random_state=seed``: the same input and seed give the same coordinates (with the
    PCA start the exact gradient hardly depends on the seed at all).
    ``perplexity`` None: :func:`default_perplexity`.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    points = len(vectors)
    if points < 2:
        raise InvalidInputError(f"a t-SNE needs at least 2 points; the model has {points} expert prompt(s)")
    perplexity = default_perplexity(points) if perplexity is None else float(perplexity)
    if not 0 < perplexity < points:
        raise InvalidInputError(f"--perplexity must lie in (0, {points}) for {points} expert prompts, got {perplexity:g}")
    tsne = _tsne_class()(
        n_components=2, perplexity=perplexity, init="pca", method="exact", random_state=seed, metric="euclidean",
    )
    return tsne.fit_transform(vectors), perplexity


def _dispersion_rows(points: ExpertPoints) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    per_pool: dict[str, list[float]] = {}
    keys = list(dict.fromkeys(zip(points.layers, points.pools)))
    for layer, pool in keys:
        vectors = points.select(layer, pool)
        distance = mean_pairwise_cosine_distance(vectors)
        rows.append({"layer": layer, "pool": pool, "experts": len(vectors), "mean_pairwise_cosine_distance": distance})
        per_pool.setdefault(pool, []).append(distance)
    for pool, distances in per_pool.items():
        finite = [value for value in distances if math.isfinite(value)]
        rows.append({
            "layer": ALL_LAYERS, "pool": pool, "experts": sum(row["experts"] for row in rows if row["pool"] == pool),
            "mean_pairwise_cosine_distance": float(np.mean(finite)) if finite else math.nan,
        })
    return rows


def expert_tsne(
    prompts: Mapping[str, Mapping[str, torch.Tensor]], seed: int = 0, perplexity: float | None = None
) -> ExpertTSNE:
    """Mean tokens, their joint t-SNE and the per-pool dispersion of a model's expert
    prompts ``{layer: {pool: (E, M, D)}}`` (see :meth:`AnomalyDetector.expert_prompts`).
    The ``all`` dispersion row of a pool is the mean of its per-layer values (each layer's
    pools are separate sets of experts, so pairs never cross layers)."""
    points = expert_mean_tokens(prompts)
    coordinates, used = tsne_embedding(points.vectors, seed, perplexity)
    norms = np.linalg.norm(points.vectors, axis=1)
    rows = [
        {
            "layer": points.layers[i], "pool": points.pools[i], "expert": points.experts[i],
            "mean_token_norm": float(norms[i]), "x": float(coordinates[i, 0]), "y": float(coordinates[i, 1]),
        }
        for i in range(len(points))
    ]
    return ExpertTSNE(rows, _dispersion_rows(points), used, seed)


def claim_holds(dispersion: list[dict[str, Any]]) -> dict[str, bool | None]:
    """Per layer (and ``all``): whether the abnormal pool is more dispersed than the normal
    one ("normal converging, abnormal diverging"); None where a pool or a value is missing."""
    values = {(row["layer"], row["pool"]): row["mean_pairwise_cosine_distance"] for row in dispersion}
    verdict: dict[str, bool | None] = {}
    for layer in dict.fromkeys(row["layer"] for row in dispersion):
        normal, abnormal = values.get((layer, "normal")), values.get((layer, "abnormal"))
        known = normal is not None and abnormal is not None and math.isfinite(normal) and math.isfinite(abnormal)
        verdict[layer] = bool(abnormal > normal) if known else None
    return verdict


def dispersion_report(dispersion: list[dict[str, Any]]) -> str:
    """Readable lines: per layer (and ``all``) each pool's mean pairwise cosine distance
    and whether the abnormal pool is the more dispersed one."""
    verdicts = claim_holds(dispersion)
    lines = ["Mean pairwise cosine distance of the experts' mean tokens (token space; higher = more dispersed):"]
    for layer, verdict in verdicts.items():
        values = ", ".join(
            f"{row['pool']} {row['mean_pairwise_cosine_distance']:.3f}" for row in dispersion if row["layer"] == layer
        )
        note = {True: "abnormal more dispersed", False: "abnormal NOT more dispersed", None: "n/a"}[verdict]
        lines.append(f"  layer {layer}: {values} ({note})")
    return "\n".join(lines)


def tsne_files(out_dir: Path) -> list[Path]:
    """The files :func:`write_expert_tsne` writes into ``out_dir``."""
    return [Path(out_dir) / name for name in (TSNE_CSV, DISPERSION_CSV, TSNE_JSON, TSNE_PNG)]


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{key: "" if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()} for row in rows])
    return buffer.getvalue()


def _json_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()} for row in rows]


def plot_expert_tsne(result: ExpertTSNE, path: Path, title: str = "Expert prompts' mean tokens (t-SNE)") -> Path:
    """One panel per prompt layer, all in the same t-SNE coordinates: that layer's normal
    (blue circles) and abnormal (red triangles) experts, numbered, over the other layers'
    points in light grey (one joint embedding, so panels compare)."""
    layers = list(dict.fromkeys(row["layer"] for row in result.rows))
    columns = min(4, len(layers))
    lines = math.ceil(len(layers) / columns)
    figure = new_figure(3.4 * columns + 0.4, 3.3 * lines + 0.6)
    every = np.array([[row["x"], row["y"]] for row in result.rows])
    margin = 0.08 * max(float(np.ptp(every[:, 0])), float(np.ptp(every[:, 1])), 1e-6)
    panels = figure.subplots(lines, columns, squeeze=False)
    for index, axes in enumerate(panels.flat):
        if index >= len(layers):
            axes.set_axis_off()
            continue
        layer = layers[index]
        axes.scatter(every[:, 0], every[:, 1], s=10, color="0.85", zorder=1)
        for pool in dict.fromkeys(row["pool"] for row in result.rows):
            mine = [row for row in result.rows if row["layer"] == layer and row["pool"] == pool]
            if not mine:
                continue
            colour, marker = POOL_STYLES.get(pool, ("tab:gray", "D"))
            axes.scatter([row["x"] for row in mine], [row["y"] for row in mine], s=36, color=colour, marker=marker, label=pool, zorder=2)
            for row in mine:
                axes.annotate(str(row["expert"]), (row["x"], row["y"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        axes.set_xlim(every[:, 0].min() - margin, every[:, 0].max() + margin)
        axes.set_ylim(every[:, 1].min() - margin, every[:, 1].max() + margin)
        axes.set_title(f"layer {layer}", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(fontsize=7, frameon=False, loc="best")
    figure.suptitle(f"{title}; perplexity {result.perplexity:g}, seed {result.seed}", fontsize=10)
    return save_figure(figure, path)


def write_expert_tsne(result: ExpertTSNE, out_dir: Path, meta: dict[str, Any] | None = None, overwrite: bool = False) -> list[Path]:
    """Write expert_tsne.csv (layer, pool, expert, mean_token_norm, x, y),
    expert_dispersion.csv (layer, pool, experts, mean_pairwise_cosine_distance),
    expert_tsne.json (both, the settings and the per-layer verdict) and expert_tsne.png."""
    out_dir = Path(out_dir)
    check_can_write(tsne_files(out_dir), overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, dispersion_path, json_path, png_path = tsne_files(out_dir)
    summary = {
        "meta": meta or {},
        "tsne": {
            "perplexity": result.perplexity, "seed": result.seed, "metric": "euclidean", "init": "pca",
            "method": "exact", "points": len(result.rows), "input": "mean token of each expert prompt",
        },
        "dispersion_measure": "mean pairwise cosine distance 1 - cos(m_i, m_j) over the experts i < j of a pool, "
        "in the token space (not the t-SNE plane); layer 'all' = mean over layers",
        "abnormal_more_dispersed_than_normal": claim_holds(result.dispersion),
        "dispersion": _json_safe(result.dispersion),
        "points": result.rows,
    }
    return [
        atomic_write_text(csv_path, _csv(result.rows, ["layer", "pool", "expert", "mean_token_norm", "x", "y"])),
        atomic_write_text(dispersion_path, _csv(result.dispersion, ["layer", "pool", "experts", "mean_pairwise_cosine_distance"])),
        atomic_write_json(json_path, summary),
        plot_expert_tsne(result, png_path),
    ]
