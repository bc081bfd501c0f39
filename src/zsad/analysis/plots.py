"""Plots of the expert analyses: similarity matrices, grouped bars, expert-assignment maps.

Same conventions as :mod:`zsad.viz` (matplotlib's object API, no pyplot, atomic writes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from ..viz import as_rgb_array, colormap, nearest_indices, new_figure, save_figure, to_numpy

__all__ = ["plot_bars", "plot_expert_assignment", "plot_matrix"]


def plot_matrix(
    matrix: Any,
    labels: Sequence[str],
    path: Path | str,
    title: str,
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "coolwarm",
    annotate: bool = True,
    value_format: str = "{:.2f}",
) -> Path:
    """Heat map of a square matrix ``(K, K)`` (e.g. inter-expert cosine similarity) as PNG.

    Rows and columns are labelled with ``labels``; with ``annotate`` every cell
    shows its value (dark or light text, whichever reads better on the cell).
    NaN cells are left blank.
    """
    values = to_numpy(matrix).astype(np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"matrix must be square (K, K), got {values.shape}")
    if len(labels) != values.shape[0]:
        raise ValueError(f"{len(labels)} labels for a {values.shape[0]}x{values.shape[0]} matrix")
    size = values.shape[0]
    side = min(16.0, max(4.5, 0.65 * size + 2.5))
    figure = new_figure(side + 1.0, side)
    axes = figure.add_subplot()
    colour_map = colormap(cmap)
    shown = axes.imshow(values, cmap=colour_map, vmin=vmin, vmax=vmax)
    figure.colorbar(shown, ax=axes, shrink=0.8)
    axes.set_xticks(range(size), labels=list(labels), rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(size), labels=list(labels))
    axes.set_title(title)
    if annotate:
        font_size = max(5, min(11, 110 // size))
        for row in range(size):
            for col in range(size):
                value = values[row, col]
                if not np.isfinite(value):
                    continue
                red, green, blue, _ = colour_map(shown.norm(value))
                luminance = 0.299 * red + 0.587 * green + 0.114 * blue
                text = value_format.format(value)
                if text.startswith("-") and float(text) == 0.0:
                    text = text[1:]  # "-0.00" reads like a sign that is not there
                axes.text(
                    col, row, text, ha="center", va="center",
                    fontsize=font_size, color="black" if luminance > 0.5 else "white",
                )
    return save_figure(figure, path)


def plot_bars(
    groups: Mapping[str, Mapping[str, float]],
    path: Path | str,
    title: str,
    ylabel: str,
) -> Path:
    """Grouped bar chart as PNG: one group per outer key, one bar per inner key.

    ``groups`` is e.g. ``{"mvtec": {"expert 0": 0.31, "expert 1": 0.69}, ...}``
    (expert utilisation per data set). Bar names are the union of inner keys
    in first-seen order, each with one colour and a legend entry; a bar missing
    from a group (or given as ``None``) is left out.
    """
    group_names = list(groups)
    bar_names: list[str] = []
    for bars in groups.values():
        bar_names.extend(name for name in bars if name not in bar_names)
    if not group_names or not bar_names:
        raise ValueError("plot_bars needs at least one group with at least one bar")
    colours = _distinct_colours(len(bar_names))
    width = 0.8 / len(bar_names)
    figure = new_figure(min(16.0, max(6.0, 0.35 * len(group_names) * len(bar_names) + 2.0)), 4.5)
    axes = figure.add_subplot()
    positions = np.arange(len(group_names), dtype=np.float64)
    for index, bar_name in enumerate(bar_names):
        heights = [groups[group].get(bar_name) for group in group_names]
        present = [i for i, height in enumerate(heights) if height is not None]
        axes.bar(
            positions[present] - 0.4 + (index + 0.5) * width,
            [heights[i] for i in present],
            width=width, color=colours[index], label=bar_name,
        )
    axes.set_xticks(positions, labels=group_names)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(figure, path)


def _distinct_colours(count: int) -> np.ndarray:
    """``count`` RGB colours ``(count, 3)`` in [0, 1] that are easy to tell apart."""
    if count <= 10:
        return np.asarray(colormap("tab10").colors[:count])
    if count <= 20:
        return np.asarray(colormap("tab20").colors[:count])
    return colormap("turbo")(np.linspace(0.0, 1.0, count))[:, :3]


def plot_expert_assignment(
    image: Image.Image | np.ndarray,
    assignment: Any,
    num_experts: int,
    path: Path | str,
    weights: Any | None = None,
    title: str | None = None,
    alpha: float = 0.5,
) -> Path:
    """Patch-selection map as PNG: each patch of the image tinted by its expert's colour.

    Args:
        image: PIL image or uint8 ``(H, W, 3)``.
        assignment: int ``(h, w)`` patch grid, the expert id (``0 .. num_experts-1``)
            of each patch (e.g. its top-1 choice).
        num_experts: K; fixes the colour of each expert.
        weights: optional float ``(h, w)`` routing weight of the chosen expert;
            the legend then gives each expert's mean weight over its patches.
        title: plot title.
        alpha: strength of the tint.

    The legend lists every expert with the share of patches it receives.
    """
    rgb = as_rgb_array(image)
    experts = to_numpy(assignment)
    if experts.ndim != 2 or not np.issubdtype(experts.dtype, np.integer):
        raise ValueError(f"assignment must be an integer array (h, w), got {experts.dtype} {experts.shape}")
    if experts.size and (experts.min() < 0 or experts.max() >= num_experts):
        raise ValueError(f"expert ids must lie in [0, {num_experts - 1}]")
    mean_weights = None
    if weights is not None:
        weight_grid = to_numpy(weights).astype(np.float64)
        if weight_grid.shape != experts.shape:
            raise ValueError(f"weights {weight_grid.shape} and assignment {experts.shape} differ in shape")
        mean_weights = [
            float(weight_grid[experts == k].mean()) if np.any(experts == k) else None
            for k in range(num_experts)
        ]

    colours = _distinct_colours(num_experts)
    rows = nearest_indices(experts.shape[0], rgb.shape[0])
    cols = nearest_indices(experts.shape[1], rgb.shape[1])
    tint = colours[experts[np.ix_(rows, cols)]] * 255.0
    tinted = np.clip(np.rint((1 - alpha) * rgb + alpha * tint), 0, 255).astype(np.uint8)

    from matplotlib.patches import Patch

    aspect = rgb.shape[1] / rgb.shape[0]
    image_width = min(4.5 * aspect, 9.0)
    legend_width = 3.5 if mean_weights is not None else 2.4
    height = max(image_width / aspect + 0.6, 0.25 * num_experts + 0.8)
    figure = new_figure(image_width + legend_width, height)
    axes = figure.add_subplot()
    axes.imshow(tinted, interpolation="nearest")
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    counts = np.bincount(experts.ravel(), minlength=num_experts)
    handles = []
    for k in range(num_experts):
        label = f"expert {k + 1}: {counts[k] / max(1, experts.size):.0%} of patches"
        if mean_weights is not None:
            label += ", mean weight " + ("n/a" if mean_weights[k] is None else f"{mean_weights[k]:.2f}")
        handles.append(Patch(facecolor=colours[k], label=label))
    figure.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8)
    return save_figure(figure, path)
