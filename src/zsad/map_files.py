"""Full-size result pictures for any image size, in bounded memory.

A detector produces its map at the model's input size ``(s, s)``; the files a user
gets are at the image's own size ``(H, W)``, which may be 100 megapixels. Nothing
here ever holds a float copy of a whole full-size image or map: the map is
upsampled a band of rows at a time (:func:`upsample_rows`, the same bilinear
resize as ``torch.nn.functional.interpolate(align_corners=False)``), and each band
is coloured, blended and appended to the 8-bit (overlay) or 16-bit (raw map) PNG
(:class:`zsad.png_stream.PngBandWriter`) before the next one is computed. The only
full-size thing in memory is the decoded image itself.

The overlay (:func:`write_overlay`) is made to be read by a person: a caption with
the image score and the verdict at the threshold, the image with the heat map
blended in (a colour's weight grows with the map value, so normal tissue or
surface stays visible), the threshold contour, and a colour bar with the scale
and the threshold marked. The raw map (:func:`write_raw_map`) is for programs:
16-bit grey, ``round(value * 65535)``, exactly as :func:`zsad.viz.save_map_png16`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .fileio import atomic_save
from .png_stream import PngBandWriter
from .viz import colormap, text_font

__all__ = ["OverlayStyle", "upsample_rows", "write_overlay", "write_raw_map"]

_PNG16_SCALE = 65535
_BAND_PIXELS = 1 << 21  # pixels per band: about 2 M, a few tens of MB of float work at most


class OverlayStyle:
    """How the heat is drawn: colour map, the heat's weight at map value 0 and 1, contour and edge colours."""

    cmap = "turbo"
    alpha_low = 0.05
    alpha_high = 0.65
    contour_color = (255, 255, 255)
    edge_color = (0, 0, 0)


def _source_positions(out_len: int, in_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (align_corners=False) sampling of an ``in_len`` axis at ``out_len`` points:
    lower index, upper index and the upper weight, each ``(out_len,)``."""
    position = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    position = np.maximum(position, 0.0)
    lower = np.minimum(position.astype(np.int64), in_len - 1)
    upper = np.minimum(lower + 1, in_len - 1)
    return lower, upper, (position - lower).astype(np.float32)


def upsample_rows(low: np.ndarray, size_hw: tuple[int, int], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the bilinear resize of ``low`` ``(h, w)`` to ``size_hw``.

    Returns float32 ``(stop - start, W)``; concatenating all bands gives the full
    resize (as ``F.interpolate(mode="bilinear", align_corners=False)``).
    """
    low = np.asarray(low, dtype=np.float32)
    height, width = size_hw
    rows_lo, rows_hi, row_weight = _source_positions(height, low.shape[0])
    cols_lo, cols_hi, col_weight = _source_positions(width, low.shape[1])
    weight = row_weight[start:stop, None]
    rows = low[rows_lo[start:stop]] * (1 - weight) + low[rows_hi[start:stop]] * weight  # (n, w)
    return rows[:, cols_lo] * (1 - col_weight) + rows[:, cols_hi] * col_weight


def _band_rows(width: int) -> int:
    return max(16, _BAND_PIXELS // max(1, width))


def _png_text(metadata: dict[str, Any] | None) -> dict[str, str]:
    """PNG text chunks ("zsad:<key>") as :func:`zsad.viz.png_text` writes them."""
    return {f"zsad:{key}": str(value) for key, value in (metadata or {}).items()}


def write_raw_map(
    path: Path | str, low: np.ndarray, size_hw: tuple[int, int], metadata: dict[str, Any] | None = None, overwrite: bool = True
) -> Path:
    """The map ``low`` ``(h, w)`` in [0, 1] resized to ``size_hw`` as a 16-bit grey PNG."""
    height, width = size_hw

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            png = PngBandWriter(handle, width, height, "I;16", _png_text(metadata))
            step = _band_rows(width)
            for start in range(0, height, step):
                band = upsample_rows(low, size_hw, start, min(height, start + step))
                png.write(np.rint(np.clip(band, 0.0, 1.0) * _PNG16_SCALE).astype(np.uint16))
            png.close()

    return atomic_save(path, write, overwrite=overwrite)


def _colour_tables(style: OverlayStyle) -> tuple[np.ndarray, np.ndarray]:
    """Per map level 0..255: the heat colour (256, 3) float32 and its weight (256,) float32."""
    levels = np.linspace(0.0, 1.0, 256)
    colours = (colormap(style.cmap)(levels)[:, :3] * 255.0).astype(np.float32)
    weights = (style.alpha_low + (style.alpha_high - style.alpha_low) * levels).astype(np.float32)
    return colours, weights


def _blend_band(rgb: np.ndarray, values: np.ndarray, colours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """uint8 ``(n, W, 3)`` image band and float ``(n, W)`` map band -> blended uint8 band."""
    level = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    weight = weights[level][..., None]
    blended = rgb * (1.0 - weight) + colours[level] * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _contour_band(
    low: np.ndarray, size_hw: tuple[int, int], start: int, stop: int, threshold: float, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The threshold contour for rows start:stop: the region ``{map >= threshold}``'s inner
    boundary (``width`` px) and a dark edge just outside it (``width // 2`` px, at least 1),
    so the line reads on bright and dark pictures alike. Two bool ``(n, W)`` arrays.

    The band is computed with ``width`` extra rows on each side so that it matches the
    contour of the whole region; the image frame does not count as outside.
    """
    height = size_hw[0]
    lo, hi = max(0, start - width), min(height, stop + width)
    region = upsample_rows(low, size_hw, lo, hi) >= threshold
    square = np.ones((3, 3), dtype=bool)
    inner = region & ~ndimage.binary_erosion(region, square, iterations=width, border_value=1)
    outer = ndimage.binary_dilation(region, square, iterations=max(1, width // 2)) & ~region
    keep = slice(start - lo, start - lo + (stop - start))
    return inner[keep], outer[keep]


def _verdict(score: float, threshold: float, contour: float) -> str:
    """The caption: score, verdict at the threshold, and what the contour means."""
    verdict = "ANOMALOUS" if score >= threshold else "normal"
    relation = ">=" if score >= threshold else "<"
    digits = 2 if threshold == contour else 3  # calibrated levels are not round numbers
    return f"score {score:.3f} {relation} {threshold:.{digits}f}: {verdict}  (white line: map = {contour:.{digits}f})"


def _draw_colour_bar(
    canvas: Image.Image, left: int, top: int, bar_w: int, bar_h: int, threshold: float, style: OverlayStyle, font, unit: int
) -> None:
    """A vertical bar, 1 at the top and 0 at the bottom, ticks every 0.25 and the threshold marked."""
    colours, _ = _colour_tables(style)
    levels = np.linspace(1.0, 0.0, bar_h)
    column = colours[np.rint(levels * 255).astype(np.int64)].astype(np.uint8)  # (bar_h, 3)
    canvas.paste(Image.fromarray(np.repeat(column[:, None, :], bar_w, axis=1)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left, top, left + bar_w - 1, top + bar_h - 1), outline=(0, 0, 0))
    line = max(1, unit // 8)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + round((1.0 - tick) * (bar_h - 1))
        draw.line((left + bar_w, y, left + bar_w + unit // 3, y), fill=(0, 0, 0), width=line)
        draw.text((left + bar_w + unit // 2, y), f"{tick:.2f}", fill=(0, 0, 0), font=font, anchor="lm")
    y = top + round((1.0 - threshold) * (bar_h - 1))  # the threshold: white on black, across the bar
    thick = max(2, line * 2)
    draw.line((left - unit // 3, y, left + bar_w - 1, y), fill=(0, 0, 0), width=thick + 2)
    draw.line((left, y, left + bar_w - 1, y), fill=style.contour_color, width=thick)


def write_overlay(
    path: Path | str,
    image: Image.Image,
    low: np.ndarray,
    score: float,
    threshold: float,
    metadata: dict[str, Any] | None = None,
    style: OverlayStyle | None = None,
    overwrite: bool = True,
    contour_threshold: float | None = None,
) -> Path:
    """Write the readable overlay of ``image`` (RGB, full size) and its map ``low`` ``(h, w)``.

    ``threshold`` decides the verdict; ``contour_threshold`` is the map level of the
    contour and of the bar's mark (None = ``threshold``; a calibrated pixel threshold).

    The picture: a caption line (score, threshold, verdict) above the image with the
    heat blended in and the threshold contour, and a colour bar (0..1, threshold
    marked) to the right. Text and bar scale with the image; the canvas is at least
    as wide as the caption.
    """
    style = style or OverlayStyle()
    width, height = image.size
    size_hw = (height, width)
    unit = max(12, min(width, height) // 32)  # font size in pixels
    font = text_font(unit)
    contour = threshold if contour_threshold is None else contour_threshold
    caption = _verdict(score, threshold, contour)
    caption_h = unit * 2
    bar_w = unit
    gap = unit // 2
    canvas_w = max(width + gap + bar_w + unit * 4, round(font.getlength(caption)) + 2 * gap)
    header = Image.new("RGB", (canvas_w, caption_h), (255, 255, 255))
    ImageDraw.Draw(header).text((gap, caption_h // 2), caption, fill=(0, 0, 0), font=font, anchor="lm")
    legend = Image.new("RGB", (canvas_w - width, height), (255, 255, 255))
    bar_h = max(unit * 4, height - unit)
    _draw_colour_bar(legend, gap, (height - bar_h) // 2, bar_w, bar_h, contour, style, font, unit)
    legend_rows = np.asarray(legend)

    colours, weights = _colour_tables(style)
    contour_width = max(2, min(width, height) // 256)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            png = PngBandWriter(handle, canvas_w, caption_h + height, "RGB", _png_text(metadata))
            png.write(np.asarray(header))
            step = _band_rows(width)
            for start in range(0, height, step):
                stop = min(height, start + step)
                band = _blend_band(
                    np.asarray(image.crop((0, start, width, stop))), upsample_rows(low, size_hw, start, stop), colours, weights
                )
                inner, outer = _contour_band(low, size_hw, start, stop, contour, contour_width)
                band[inner] = style.contour_color
                band[outer] = style.edge_color
                png.write(np.concatenate([band, legend_rows[start:stop]], axis=1))
            png.close()

    return atomic_save(path, write, overwrite=overwrite)
