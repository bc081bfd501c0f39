"""zsad.imageio: every image mode to 8-bit RGB, masks to bool, clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from data_factories import (
    FIXTURES,
    file_info,
    load_array,
    save,
    square_image,
    square_mask,
    write_16bit_png,
    write_exif_rotated_jpeg,
    write_palette_png,
    write_rgb_tiff_16bit,
    write_text_file,
    write_truncated,
)
from PIL import Image, UnidentifiedImageError

from zsad.imageio import ImageReadError, MaskSizeError, read_image, read_mask

CLINICDB = FIXTURES / "cvc-clinicdb"


def as_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


# --- images -----------------------------------------------------------------------------


def test_rgb_png_is_returned_unchanged(tmp_path):
    array = square_image()
    np.testing.assert_array_equal(as_array(read_image(save(array, tmp_path / "a.png"))), array)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    rgb = as_array(read_image(save(grey, tmp_path / "g.png")))
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


def test_rgba_and_la_drop_alpha_keeping_stored_colours(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 150, 250)
    rgba[:4, :, 3] = 0  # transparent half keeps its colour (alpha dropped, not composited)
    rgba[4:, :, 3] = 255
    np.testing.assert_array_equal(as_array(read_image(save(rgba, tmp_path / "a.png"))), rgba[..., :3])

    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0] = 77
    la[..., 1] = 0
    path = tmp_path / "la.png"
    save(la, path)
    assert file_info(path)[0] == "LA"
    np.testing.assert_array_equal(as_array(read_image(path)), np.full((8, 8, 3), 77, dtype=np.uint8))


def test_palette_png_is_expanded_through_its_palette(tmp_path):
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    path = write_palette_png(tmp_path / "p.png", indices, palette)
    assert file_info(path)[0] == "P"
    expected = np.array([[palette[i] for i in row] for row in indices], dtype=np.uint8)
    np.testing.assert_array_equal(as_array(read_image(path)), expected)


def test_16bit_png_is_scaled_by_its_actual_maximum_not_clipped(tmp_path):
    values = np.array([[0, 1000, 2048, 4095]], dtype=np.uint16)  # a 12-bit scan stored in 16 bit
    path = write_16bit_png(tmp_path / "deep.png", values)
    assert file_info(path)[0].startswith("I")
    rgb = as_array(read_image(path))
    np.testing.assert_array_equal(rgb[0, :, 0], np.rint(values[0] * 255.0 / 4095).astype(np.uint8))
    assert rgb[0, 3, 0] == 255 and 0 < rgb[0, 1, 0] < rgb[0, 2, 0] < 255


def test_16bit_rgb_tiff_is_read_with_tifffile_and_scaled(tmp_path):
    array = np.zeros((4, 5, 3), dtype=np.uint16)
    array[..., 0] = 60000
    array[..., 1] = 30000
    path = write_rgb_tiff_16bit(tmp_path / "deep.tif", array)
    rgb = as_array(read_image(path))
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[0, 0], [255, 128, 0])


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_deep_greyscale_tiff_is_scaled_by_its_maximum(tmp_path, dtype):
    values = np.array([[0, 500, 1000]], dtype=dtype)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, values)
    np.testing.assert_array_equal(as_array(read_image(path))[0, :, 1], [0, 128, 255])
    np.testing.assert_array_equal(read_mask(path, None), values > 0)


def test_clinicdb_rgb_tiff_that_pillow_cannot_open_is_read_with_tifffile():
    path = CLINICDB / "Original" / "57.tif"
    with pytest.raises(UnidentifiedImageError):
        file_info(path)
    image = read_image(path)
    np.testing.assert_array_equal(as_array(image), tifffile.imread(path))
    assert image.size == (384, 288)


def test_exif_orientation_is_applied(tmp_path):
    image = as_array(read_image(write_exif_rotated_jpeg(tmp_path / "rot.jpg")))
    assert image.shape == (40, 20, 3)  # stored 40 wide x 20 high, displayed 20 wide x 40 high
    top, bottom = image[:15].mean(axis=(0, 1)), image[25:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 50  # red on top
    assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_files_raise_with_path_and_reason(tmp_path, fmt, suffix):
    path = write_truncated(tmp_path / f"cut{suffix}", fmt)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: {caught.value.reason}"
    assert "truncated" in caught.value.reason.lower() or "error" in caught.value.reason.lower()


@pytest.mark.parametrize("writer", [write_text_file, lambda p: p.write_bytes(b"") and p])
def test_non_image_named_png_raises(tmp_path, writer):
    path = tmp_path / "fake.png"
    writer(path)
    with pytest.raises(ImageReadError, match="cannot decode image"):
        read_image(path)


def test_text_file_named_tif_reports_both_decoders(tmp_path):
    path = write_text_file(tmp_path / "fake.tif")
    with pytest.raises(ImageReadError, match="Pillow: .*tifffile: "):
        read_image(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


# --- masks ------------------------------------------------------------------------------


def test_mask_0_255_png_binarises_at_its_own_size(tmp_path):
    mask = square_mask()
    result = read_mask(save(mask, tmp_path / "m.png"), expected_size=(32, 24))
    assert result.dtype == bool and result.shape == (24, 32)
    np.testing.assert_array_equal(result, mask > 0)


def test_jpeg_mask_thresholds_above_127(tmp_path):
    rows, cols = np.mgrid[:64, :64]
    mask = ((rows - 30) ** 2 + (cols - 35) ** 2 < 15**2).astype(np.uint8) * 255  # curved edges
    path = save(mask, tmp_path / "m.jpg", quality=75)
    stored = load_array(path)
    assert ((stored > 0) & (stored < 128)).any(), "JPEG noise expected near the edge"
    np.testing.assert_array_equal(read_mask(path, None), stored > 127)
    assert (read_mask(path, None) == (mask > 0)).mean() > 0.98


def test_lossless_label_map_mask_counts_every_nonzero_label(tmp_path):
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[1, 1], labels[4, 4] = 1, 2  # instance ids, as some sets store masks
    np.testing.assert_array_equal(read_mask(save(labels, tmp_path / "m.png"), None), labels > 0)


def test_antialiased_0_255_mask_uses_half_range_threshold(tmp_path):
    mask = np.array([[0, 100, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(read_mask(save(mask, tmp_path / "m.png"), None), [[False, False, True, True]])


def test_16bit_mask_is_foreground_above_zero(tmp_path):
    values = np.array([[0, 1, 0, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(read_mask(write_16bit_png(tmp_path / "m.png", values), None), values > 0)


def test_rgb_and_palette_masks_use_any_channel(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (200, 0, 0)
    rgb[0, 1] = (0, 0, 255)
    rgb[1, 2] = (100, 100, 100)
    np.testing.assert_array_equal(
        read_mask(save(rgb, tmp_path / "rgb.png"), None), [[True, True, False], [False, False, False]]
    )
    indices = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    path = write_palette_png(tmp_path / "p.png", indices, [(0, 0, 0), (128, 0, 0)])
    np.testing.assert_array_equal(read_mask(path, None), indices == 1)


def test_mask_of_wrong_size_names_both_files_and_sizes(tmp_path):
    mask_path = save(np.zeros((10, 12), dtype=np.uint8), tmp_path / "m.png")
    image_path = tmp_path / "img.png"
    with pytest.raises(MaskSizeError) as caught:
        read_mask(mask_path, expected_size=(32, 24), image_path=image_path)
    message = str(caught.value)
    assert str(mask_path) in message and str(image_path) in message
    assert "12x10" in message and "32x24" in message


def test_unreadable_mask_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError):
        read_mask(write_text_file(tmp_path / "m.png"), None)


def test_kvasir_jpeg_masks_binarise_and_match_their_images():
    names = sorted(p.name for p in (FIXTURES / "kvasir-seg" / "masks").iterdir())
    assert len(names) == 2
    for name in names:
        image = read_image(FIXTURES / "kvasir-seg" / "images" / name)
        mask_path = FIXTURES / "kvasir-seg" / "masks" / name
        mask = read_mask(mask_path, image.size)
        stored = load_array(mask_path, "RGB").max(axis=2)
        np.testing.assert_array_equal(mask, stored > 127)
        assert 0.005 < mask.mean() < 0.9


def test_brainmri_files_of_every_mode_load_as_rgb():
    seen_modes = set()
    for path in sorted((FIXTURES / "brainmri").rglob("*.jpg")):
        mode, size, _ = file_info(path)
        if mode in seen_modes:
            continue
        seen_modes.add(mode)
        image = read_image(path)
        assert image.mode == "RGB" and image.size == size
    assert {"RGB", "L", "RGBA", "P"} <= seen_modes
