"""Pictures for people: heat-map overlays, raw 16-bit maps, comparison panels, loss curves
(the expert plots live in :mod:`zsad.analysis.plots`).

Images are PIL images or ``uint8`` arrays of shape ``(H, W, 3)`` (``(H, W)``
grayscale is accepted too). Anomaly maps are float arrays ``(h, w)`` with
values in ``[0, 1]``; they are resized bilinearly to the image when the sizes
differ. A fixed ``[0, 1]`` colour scale is used on purpose (no per-image
normalisation), so that a normal image looks calm and colours are comparable
across images.

Plots use matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): no
pyplot, no global backend switch, so the user's own matplotlib setup is left
alone. Every file is written atomically (see :mod:`zsad.fileio`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from scipy import ndimage

from .fileio import atomic_save

__all__ = [
    "comparison_panel",
    "load_map_png16",
    "overlay_heatmap",
    "plot_curves",
    "region_boundary",
    "save_map_png16",
]

_PNG16_SCALE = 65535
_PLOT_DPI = 150


# --------------------------------------------------------------------------- inputs


def to_numpy(array: Any) -> np.ndarray:
    """Accept numpy arrays, nested lists and (CPU or GPU) torch tensors."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _map_array(anomaly_map: Any, dtype: type) -> np.ndarray:
    """An anomaly map (h, w) or (1, h, w), numpy or torch -> finite (h, w) array of dtype."""
    values = to_numpy(anomaly_map).astype(dtype)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"anomaly map must have shape (h, w), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("anomaly map contains NaN or infinite values")
    return values


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Return the image as ``uint8`` ``(H, W, 3)``."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = to_numpy(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) or (H, W), got {array.shape}")
    return array


def _as_map(anomaly_map: Any, size_hw: tuple[int, int]) -> np.ndarray:
    """Return the map as float32 ``(H, W)`` at ``size_hw``, clipped to ``[0, 1]``.

    ``anomaly_map`` is ``(h, w)`` or ``(1, h, w)``; it is resized bilinearly
    when ``(h, w) != size_hw``. Non-finite values are an error (they point to a
    bug upstream and would be silently painted as 0 or 1 otherwise).
    """
    values = _map_array(anomaly_map, np.float32)
    if values.shape != tuple(size_hw):
        height, width = size_hw
        resized = Image.fromarray(values).resize((width, height), Image.BILINEAR)
        values = np.asarray(resized, dtype=np.float32)
    return np.clip(values, 0.0, 1.0)


def _as_mask(mask: Any, size_hw: tuple[int, int]) -> np.ndarray:
    """Return a boolean ``(H, W)`` mask; nonzero input pixels are anomalous."""
    binary = to_numpy(mask)
    if binary.ndim == 3 and binary.shape[0] == 1:
        binary = binary[0]
    if binary.ndim != 2:
        raise ValueError(f"mask must have shape (h, w), got {binary.shape}")
    binary = binary != 0
    if binary.shape != tuple(size_hw):
        rows = nearest_indices(binary.shape[0], size_hw[0])
        cols = nearest_indices(binary.shape[1], size_hw[1])
        binary = binary[np.ix_(rows, cols)]
    return binary


def nearest_indices(source_len: int, target_len: int) -> np.ndarray:
    """Indices into a ``source_len`` axis for nearest-neighbour resizing to ``target_len``."""
    centres = (np.arange(target_len) + 0.5) * source_len / target_len
    return np.minimum(centres.astype(np.int64), source_len - 1)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


# --------------------------------------------------------------------------- overlays


def region_boundary(region: np.ndarray, width: int = 2) -> np.ndarray:
    """Inner boundary of a boolean region ``(H, W)``, ``width`` pixels thick.

    A pixel is on the boundary when it belongs to the region and lies within
    ``width`` pixels (8-connectivity) of a pixel outside it. The image frame
    does not count as "outside", so a region touching the border is not
    outlined along the frame.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    structure = np.ones((3, 3), dtype=bool)
    interior = ndimage.binary_erosion(region, structure, iterations=width, border_value=1)
    return region & ~interior


def overlay_heatmap(
    image: Image.Image | np.ndarray,
    anomaly_map: Any,
    threshold: float | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    contour_color: tuple[int, int, int] = (255, 255, 255),
    contour_width: int = 2,
) -> Image.Image:
    """Blend a colour-mapped anomaly map over an image.

    Args:
        image: PIL image or uint8 array ``(H, W, 3)``.
        anomaly_map: float ``(h, w)`` in ``[0, 1]`` (values outside are clipped);
            resized bilinearly to ``(H, W)`` if needed.
        threshold: if given, the boundary of ``{map >= threshold}`` is drawn
            in ``contour_color``, ``contour_width`` pixels thick, on the inside
            of the region.
        alpha: weight of the heat colours; ``1 - alpha`` is kept of the image
            everywhere, so the image stays recognisable under the heat.
        cmap: name of a matplotlib colour map.

    Returns:
        RGB PIL image of size ``(W, H)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = as_rgb_array(image)
    values = _as_map(anomaly_map, rgb.shape[:2])
    heat = colormap(cmap)(values)[..., :3] * 255.0
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    result = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if threshold is not None:
        result[region_boundary(values >= threshold, contour_width)] = contour_color
    return Image.fromarray(result)


# --------------------------------------------------------------------------- raw maps


def png_text(metadata: dict[str, Any] | None) -> PngInfo | None:
    """PNG text chunks ("zsad:<key>") recording how a picture was made."""
    if not metadata:
        return None
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(f"zsad:{key}", str(value))
    return info


def save_map_png16(path: Path | str, anomaly_map: Any, metadata: dict[str, Any] | None = None) -> Path:
    """Save a map ``(H, W)`` as a 16-bit grayscale PNG: ``round(clip(v, 0, 1) * 65535)``.

    Use :func:`load_map_png16` to read it back (error at most ``1 / 65535``). ``metadata``
    is stored as PNG text chunks (e.g. the weights that produced the map).
    """
    values = _map_array(anomaly_map, np.float64)
    levels = np.rint(np.clip(values, 0.0, 1.0) * _PNG16_SCALE).astype(np.uint16)
    picture = Image.fromarray(levels)
    return atomic_save(path, lambda tmp: picture.save(tmp, format="PNG", pnginfo=png_text(metadata)))


def load_map_png16(path: Path | str) -> np.ndarray:
    """Read a map written by :func:`save_map_png16`: float32 ``(H, W)`` in ``[0, 1]``."""
    with Image.open(path) as picture:
        if picture.mode not in ("I;16", "I;16B", "I;16L"):
            raise ValueError(
                f"{path} is not a 16-bit grayscale PNG (mode {picture.mode}); "
                "raw anomaly maps are written by save_map_png16"
            )
        levels = np.asarray(picture).astype(np.float32)
    return levels / _PNG16_SCALE


# --------------------------------------------------------------------------- panels


def text_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit(picture: Image.Image, max_side: int | None, resample: int) -> Image.Image:
    if max_side is None or max(picture.size) <= max_side:
        return picture
    scale = max_side / max(picture.size)
    new_size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(new_size, resample)


def comparison_panel(
    image: Image.Image | np.ndarray,
    anomaly_map: Any,
    mask: Any | None = None,
    score: float | None = None,
    title: str | None = None,
    threshold: float | None = None,
    max_side: int | None = 512,
) -> Image.Image:
    """Side-by-side panel: image | heat-map overlay | ground truth (if ``mask`` is given).

    Each tile is labelled; a caption line below shows ``title`` and ``score``.

    Args:
        image: PIL image or uint8 ``(H, W, 3)``.
        anomaly_map: float ``(h, w)`` in ``[0, 1]``.
        mask: optional ground truth ``(h', w')``; nonzero pixels are anomalous.
            Shown white on black.
        score: image-level anomaly score shown in the caption.
        title: e.g. the file name or class.
        threshold: passed to :func:`overlay_heatmap` to outline the region.
        max_side: tiles are shrunk so that their longer side is at most this
            many pixels (``None`` keeps the image resolution).
    """
    rgb = as_rgb_array(image)
    tiles = [
        ("image", Image.fromarray(rgb)),
        ("anomaly map", overlay_heatmap(rgb, anomaly_map, threshold=threshold)),
    ]
    if mask is not None:
        truth = _as_mask(mask, rgb.shape[:2]).astype(np.uint8) * 255
        tiles.append(("ground truth", Image.fromarray(truth).convert("RGB")))
    tiles = [(name, _fit(tile, max_side, Image.LANCZOS)) for name, tile in tiles]

    tile_w, tile_h = tiles[0][1].size
    gap = max(4, tile_w // 64)
    font_size = max(12, min(28, tile_h // 18))
    font = text_font(font_size)
    label_h = font_size + 2 * gap
    caption_parts = [part for part in (title, None if score is None else f"score {score:.4f}") if part]
    caption_h = label_h if caption_parts else 0

    width = len(tiles) * tile_w + (len(tiles) + 1) * gap
    height = label_h + tile_h + caption_h + gap
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for index, (name, tile) in enumerate(tiles):
        left = gap + index * (tile_w + gap)
        draw.text((left, gap), name, fill=(0, 0, 0), font=font)
        panel.paste(tile, (left, label_h))
    if caption_parts:
        draw.text((gap, label_h + tile_h + gap // 2), "   ".join(caption_parts), fill=(0, 0, 0), font=font)
    return panel


# --------------------------------------------------------------------------- plots


def new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path | str) -> Path:
    return atomic_save(path, lambda tmp: figure.savefig(tmp, format="png", dpi=_PLOT_DPI))


def plot_curves(
    series: Mapping[str, Sequence[float]],
    path: Path | str,
    title: str,
    xlabel: str,
    ylabel: str,
    x: Mapping[str, Sequence[float]] | None = None,
    log_y: bool = False,
) -> Path:
    """Line plot as PNG, one line per entry of ``series`` (e.g. training losses over steps).

    Values are plotted against ``0, 1, 2, ...`` unless ``x[name]`` gives the
    x positions of that series (e.g. the logged step numbers). NaN values leave gaps.
    """
    if not series:
        raise ValueError("plot_curves needs at least one series")
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot()
    for name, values in series.items():
        y_values = np.asarray(values, dtype=np.float64)
        x_values = np.arange(len(y_values)) if x is None or name not in x else np.asarray(x[name], dtype=np.float64)
        if x_values.shape != y_values.shape:
            raise ValueError(f"series {name!r}: {len(x_values)} x values for {len(y_values)} y values")
        axes.plot(x_values, y_values, label=name, linewidth=1.5)
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(frameon=False)
    return save_figure(figure, path)
