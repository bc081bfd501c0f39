"""Issue 11, items 8 and 11: bounded-memory reading and writing of large images, the
readable overlay, the unchanged raw map, and comparison panels at the image's aspect."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zsad.engine.evaluation import _save_panel
from zsad.imageio import read_image, read_image_reduced
from zsad.map_files import OverlayStyle, upsample_rows, write_overlay, write_raw_map
from zsad.png_stream import PngBandWriter
from zsad.viz import colormap, load_map_png16, save_map_png16


def _smooth_map(h: int = 9, w: int = 7) -> np.ndarray:
    rows, cols = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return (0.5 * rows + 0.5 * cols * cols).astype(np.float32)


def test_band_upsampling_equals_the_whole_bilinear_resize():
    low = _smooth_map()
    whole = F.interpolate(torch.from_numpy(low)[None, None], size=(50, 23), mode="bilinear", align_corners=False)[0, 0].numpy()
    bands = np.concatenate([upsample_rows(low, (50, 23), start, min(50, start + 16)) for start in range(0, 50, 16)])
    np.testing.assert_allclose(bands, whole, atol=1e-6)


def test_raw_map_written_in_bands_is_the_16_bit_map_of_the_full_resize(tmp_path):
    low = _smooth_map()
    write_raw_map(tmp_path / "bands.png", low, (31, 45), {"weights": "random"})
    full = F.interpolate(torch.from_numpy(low)[None, None], size=(31, 45), mode="bilinear", align_corners=False)[0, 0].numpy()
    save_map_png16(tmp_path / "whole.png", full)
    bands = np.asarray(Image.open(tmp_path / "bands.png")).astype(int)
    assert np.abs(bands - np.asarray(Image.open(tmp_path / "whole.png")).astype(int)).max() <= 1  # float32 rounding
    assert load_map_png16(tmp_path / "bands.png").shape == (31, 45)
    assert Image.open(tmp_path / "bands.png").text["zsad:weights"] == "random"


def test_reduced_jpeg_decode_keeps_the_model_size_and_reports_the_full_size(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (1536, 2048, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90)
    image, full_size = read_image_reduced(tmp_path / "big.jpg", 64)
    assert full_size == (2048, 1536)
    assert 64 <= image.width < 128 and 64 <= image.height < 128  # draft 1/8, then a whole-factor box reduce
    rotated = Image.fromarray(pixels[:400, :600])
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90: width and height swap
    rotated.save(tmp_path / "turned.jpg", exif=exif)
    turned, turned_size = read_image_reduced(tmp_path / "turned.jpg", 64)
    assert turned_size == (400, 600) == read_image(tmp_path / "turned.jpg").size
    # 600x400 stored, drafted at 1/4 (150x100), turned (100x150), box-reduced by (1, 2).
    assert turned.size == (100, 75)
    Image.fromarray(pixels[:300, :500]).save(tmp_path / "big.png")
    small, png_size = read_image_reduced(tmp_path / "big.png", 64)
    assert png_size == (500, 300) and small.size == (-(-500 // 7), 300 // 4)  # reduce keeps a partial last box


def test_overlay_shows_image_heat_contour_colour_bar_and_caption(tmp_path):
    grey = np.full((120, 160, 3), 100, dtype=np.uint8)
    low = np.zeros((8, 8), dtype=np.float32)
    low[2:6, 2:6] = 1.0  # one hot square in the middle
    path = write_overlay(tmp_path / "o.png", Image.fromarray(grey), low, score=0.8, threshold=0.5, metadata={"method": "zeroshot"})
    picture = Image.open(path)
    assert picture.text["zsad:method"] == "zeroshot"
    canvas = np.asarray(picture.convert("RGB")).astype(int)
    assert canvas.shape[1] > 160 and canvas.shape[0] > 120  # room for the caption and the colour bar
    top = canvas.shape[0] - 120
    image_part = canvas[top:, :160]
    style = OverlayStyle()
    # Far from the hot square the map is 0: the image shows through with the lowest heat weight.
    cold = colormap(style.cmap)(0.0)[:3]
    expected = np.rint(100 * (1 - style.alpha_low) + np.asarray(cold) * 255 * style.alpha_low)
    assert np.abs(image_part[2, 2] - expected).max() <= 1
    # At the centre (map 1) the heat colour dominates.
    hot = np.asarray(colormap(style.cmap)(1.0)[:3]) * 255
    centre = image_part[60, 80]
    assert np.abs(centre - hot).sum() < np.abs(centre - 100).sum()
    # The threshold contour: white pixels inside the square's edge, black just outside.
    assert (np.all(image_part == 255, axis=2)).sum() > 50 and (np.all(image_part == 0, axis=2)).sum() > 50
    # The caption band holds dark text; the colour bar holds the colour map's extremes.
    assert (canvas[:top] < 80).all(axis=2).any()
    bar = canvas[top:, 160:]
    for value in (0.0, 1.0):
        colour = np.rint(np.asarray(colormap(style.cmap)(value)[:3]) * 255)
        assert (np.abs(bar - colour).max(axis=2) <= 20).any()  # the extreme rows sit under the frame


def test_normal_verdict_in_caption_changes_nothing_in_the_image_part(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    low = _smooth_map() * 0.3
    above = np.asarray(Image.open(write_overlay(tmp_path / "a.png", Image.fromarray(rgb), low, 0.9, 0.5)).convert("RGB"))
    below = np.asarray(Image.open(write_overlay(tmp_path / "b.png", Image.fromarray(rgb), low, 0.1, 0.5)).convert("RGB"))
    assert above.shape[0] == below.shape[0]
    assert np.array_equal(above[-50:, :70], below[-50:, :70])


def test_comparison_panel_keeps_the_image_aspect_ratio(tmp_path):
    Image.new("RGB", (120, 60), (90, 90, 90)).save(tmp_path / "wide.png")
    mask = np.zeros((64, 64), dtype=bool)
    mask[20:40, 20:40] = True
    _save_panel(tmp_path / "maps", str(tmp_path / "wide.png"), "cat", _smooth_map(64, 64), mask, 0.7)
    panel = Image.open(tmp_path / "maps" / "cat" / f"{tmp_path.name}_wide.png")
    gap = 4
    assert panel.width == 3 * 120 + 4 * gap  # three tiles at the image's own 2:1 size, not squares of 64


def test_png_written_band_by_band_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    grey = rng.integers(0, 65536, (37, 29), dtype=np.uint16)
    for name, mode, pixels in (("rgb.png", "RGB", rgb), ("grey.png", "I;16", grey)):
        with open(tmp_path / name, "wb") as handle:
            png = PngBandWriter(handle, 29, 37, mode, {"zsad:method": "zeroshot"})
            for start in range(0, 37, 10):
                png.write(pixels[start : start + 10])
            png.close()
        with Image.open(tmp_path / name) as read:
            assert read.text == {"zsad:method": "zeroshot"}
            assert np.array_equal(np.asarray(read), pixels)
    with open(tmp_path / "short.png", "wb") as handle:
        png = PngBandWriter(handle, 29, 37, "RGB")
        png.write(rgb[:10])
        with pytest.raises(ValueError, match="10 of 37 rows"):
            png.close()
        with pytest.raises(ValueError, match="shape"):
            png.write(grey[:5])
