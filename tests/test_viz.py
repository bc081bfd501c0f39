"""Overlays, raw 16-bit maps, comparison panels and plots (zsad.viz)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from zsad.analysis.plots import plot_bars, plot_expert_assignment, plot_matrix
from zsad.viz import (
    comparison_panel,
    load_map_png16,
    overlay_heatmap,
    plot_curves,
    region_boundary,
    save_map_png16,
)

WHITE = np.array([255, 255, 255])


def _textured_image(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _disc(height: int, width: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


# --------------------------------------------------------------------------- raw maps


def test_png16_round_trip_within_one_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    anomaly_map = rng.random((37, 53)).astype(np.float32)
    anomaly_map[0, :3] = [0.0, 1.0, 0.5]
    path = save_map_png16(tmp_path / "map.png", anomaly_map)
    with Image.open(path) as picture:
        assert picture.mode.startswith("I;16") and picture.size == (53, 37)
    loaded = load_map_png16(path)
    assert loaded.dtype == np.float32 and loaded.shape == (37, 53)
    assert np.max(np.abs(loaded - anomaly_map)) <= 1.0 / 65535
    assert loaded[0, 0] == 0.0 and loaded[0, 1] == 1.0


def test_png16_clips_out_of_range_and_rejects_nan(tmp_path: Path) -> None:
    path = save_map_png16(tmp_path / "map.png", np.array([[-0.5, 1.7]]))
    assert load_map_png16(path).tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="NaN"):
        save_map_png16(tmp_path / "bad.png", np.array([[np.nan, 0.1]]))
    assert not (tmp_path / "bad.png").exists()


def test_load_png16_refuses_8bit_images(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(ValueError, match="16-bit"):
        load_map_png16(tmp_path / "eight.png")


# --------------------------------------------------------------------------- overlays


def test_overlay_changes_high_region_and_keeps_low_region_recognisable() -> None:
    image = _textured_image()
    anomaly_map = np.zeros((64, 80), np.float32)
    anomaly_map[:, 40:] = 1.0
    alpha = 0.45
    overlay = np.asarray(overlay_heatmap(image, anomaly_map, alpha=alpha)).astype(np.float64)
    assert overlay.shape == image.shape

    jet = matplotlib.colormaps["jet"]
    expected_low = (1 - alpha) * image[:, :40] + alpha * 255 * np.array(jet(0.0)[:3])
    expected_high = (1 - alpha) * image[:, 40:] + alpha * 255 * np.array(jet(1.0)[:3])
    assert np.max(np.abs(overlay[:, :40] - expected_low)) <= 0.5 + 1e-6
    assert np.max(np.abs(overlay[:, 40:] - expected_high)) <= 0.5 + 1e-6

    # where the map is high the heat colour dominates: red rises against blue
    shift_high = (overlay[:, 40:, 0] - overlay[:, 40:, 2]).mean() - (
        image[:, 40:, 0].astype(float) - image[:, 40:, 2]
    ).mean()
    assert shift_high > 30
    # where it is low the picture is still there: the texture correlates perfectly
    for channel in range(3):
        low_corr = np.corrcoef(overlay[:, :40, channel].ravel(), image[:, :40, channel].ravel())[0, 1]
        assert low_corr > 0.99


def test_overlay_alpha_zero_is_the_image_and_pil_input_works() -> None:
    image = _textured_image()
    result = overlay_heatmap(Image.fromarray(image), np.full((64, 80), 0.8), alpha=0.0)
    assert isinstance(result, Image.Image) and result.mode == "RGB"
    assert np.array_equal(np.asarray(result), image)


def test_overlay_resizes_small_map_bilinearly() -> None:
    image = np.zeros((64, 96, 3), np.uint8)
    small = np.array([[0.0, 1.0]], np.float32)  # left low, right high
    overlay = np.asarray(overlay_heatmap(image, small, alpha=1.0)).astype(int)
    assert overlay.shape == (64, 96, 3)
    jet = matplotlib.colormaps["jet"]
    assert np.allclose(overlay[10, 0], np.array(jet(0.0)[:3]) * 255, atol=1)
    assert np.allclose(overlay[10, -1], np.array(jet(1.0)[:3]) * 255, atol=1)
    # a smooth ramp, not two blocks: the middle column shows a middle colour
    assert np.allclose(overlay[10, 48], np.array(jet(0.5)[:3]) * 255, atol=25)


def test_overlay_rejects_bad_input() -> None:
    image = _textured_image()
    with pytest.raises(ValueError, match="NaN"):
        overlay_heatmap(image, np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="uint8"):
        overlay_heatmap(image.astype(np.float32), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(image, np.zeros((8, 8)), alpha=1.5)


def test_contour_lies_on_boundary_of_thresholded_region() -> None:
    height, width = 64, 80
    image = np.zeros((height, width, 3), np.uint8)  # jet over black is never white
    anomaly_map = np.where(_disc(height, width, (30, 40), 14), 0.9, 0.1).astype(np.float32)
    overlay = np.asarray(overlay_heatmap(image, anomaly_map, threshold=0.5, contour_width=2))
    contour = np.all(overlay == WHITE, axis=-1)
    region = anomaly_map >= 0.5
    outside = ~region

    assert contour.any()
    assert not np.any(contour & outside), "contour must not spill outside the region"
    distance_to_outside = ndimage.distance_transform_cdt(region, metric="chessboard")
    assert distance_to_outside[contour].max() <= 2, "contour pixels must be near the edge"
    # closed: every region pixel that touches the outside is on the contour
    touching = region & ndimage.binary_dilation(outside)
    assert np.all(contour[touching])
    # and the interior stays a heat colour
    assert not contour[30, 40]


def test_contour_not_drawn_along_image_frame() -> None:
    region = np.zeros((20, 20), bool)
    region[:, :8] = True  # touches the top, bottom and left frame
    boundary = region_boundary(region, width=1)
    assert np.array_equal(np.argwhere(boundary)[:, 1], np.full(20, 7))


# --------------------------------------------------------------------------- panels


def test_comparison_panel_layout_and_content() -> None:
    image = _textured_image(60, 90)
    anomaly_map = np.where(_disc(60, 90, (30, 45), 10), 0.95, 0.05)
    mask = _disc(60, 90, (30, 45), 10)
    with_mask = comparison_panel(image, anomaly_map, mask=mask, score=0.8731, title="bottle/000.png", max_side=None)
    without_mask = comparison_panel(image, anomaly_map, max_side=None)
    assert with_mask.mode == "RGB"
    assert with_mask.width > 3 * 90 and without_mask.width > 2 * 90
    assert with_mask.width - without_mask.width >= 90
    assert with_mask.height > without_mask.height  # the caption line

    # find the tiles: the image tile appears verbatim, the overlay follows it
    panel = np.asarray(with_mask)
    overlay = np.asarray(overlay_heatmap(image, anomaly_map))
    matches = [
        (top, left)
        for top in range(panel.shape[0] - 60)
        for left in range(0, panel.shape[1] - 90)
        if np.array_equal(panel[top, left : left + 90], image[0])
    ]
    assert matches, "the original image must appear in the panel"
    top, left = matches[0]
    assert np.array_equal(panel[top : top + 60, left : left + 90], image)
    overlay_left = next(
        x for x in range(left + 90, panel.shape[1] - 90) if np.array_equal(panel[top, x : x + 90], overlay[0])
    )
    assert np.array_equal(panel[top : top + 60, overlay_left : overlay_left + 90], overlay)
    truth_left = overlay_left + (overlay_left - left)  # tiles are evenly spaced
    truth_tile = panel[top : top + 60, truth_left : truth_left + 90]
    assert np.array_equal(truth_tile[..., 0] > 127, mask)


def test_comparison_panel_shrinks_large_images() -> None:
    image = _textured_image(600, 900)
    panel = comparison_panel(image, np.zeros((20, 30)), max_side=256)
    assert panel.width < 2 * 256 + 64


# --------------------------------------------------------------------------- plots


def _open_png(path: Path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 2000
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert 300 <= picture.width <= 3000 and 200 <= picture.height <= 3000
        return np.asarray(picture.convert("RGB"))


def test_plot_matrix_writes_png_with_annotations(tmp_path: Path) -> None:
    matrix = np.array([[1.0, 0.2, -0.4], [0.2, 1.0, 0.1], [-0.4, 0.1, 1.0]])
    labels = ["expert 0", "expert 1", "expert 2"]
    annotated = _open_png(plot_matrix(matrix, labels, tmp_path / "sim.png", "cosine similarity"))
    plain = _open_png(plot_matrix(matrix, labels, tmp_path / "sim_plain.png", "cosine similarity", annotate=False))
    assert annotated.shape == plain.shape and not np.array_equal(annotated, plain)
    # the coolwarm extremes show up: a reddish cell for +1 and a bluish one for -0.4
    reddish = (annotated[..., 0] > 150) & (annotated[..., 2] < 100)
    bluish = (annotated[..., 2] > 150) & (annotated[..., 0] < 170)
    assert reddish.sum() > 500 and bluish.sum() > 500
    with pytest.raises(ValueError):
        plot_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png", "t")
    with pytest.raises(ValueError):
        plot_matrix(np.zeros((2, 2)), ["a"], tmp_path / "x.png", "t")


def test_plot_bars_and_curves_write_pngs(tmp_path: Path) -> None:
    groups = {"mvtec": {"expert 0": 0.3, "expert 1": 0.7}, "visa": {"expert 0": 0.5, "expert 2": 0.5}}
    bars = _open_png(plot_bars(groups, tmp_path / "bars.png", "expert utilisation", "share of patches"))
    assert bars.std() > 10
    with pytest.raises(ValueError):
        plot_bars({}, tmp_path / "none.png", "t", "y")

    series = {"focal": list(np.linspace(1.0, 0.2, 50)), "dice": list(np.linspace(0.8, 0.3, 50))}
    curves = _open_png(plot_curves(series, tmp_path / "loss.png", "training", "step", "loss"))
    assert curves.std() > 10
    stepped = plot_curves({"focal": [1.0, 0.5]}, tmp_path / "loss2.png", "t", "step", "loss", x={"focal": [0, 100]}, log_y=True)
    _open_png(stepped)
    with pytest.raises(ValueError, match="x values"):
        plot_curves({"focal": [1.0, 0.5]}, tmp_path / "bad.png", "t", "s", "l", x={"focal": [0]})


def test_plot_expert_assignment_tints_patches_by_expert(tmp_path: Path) -> None:
    image = np.full((224, 224, 3), 128, np.uint8)
    assignment = np.zeros((14, 14), np.int64)
    assignment[:, 7:] = 1  # left half expert 0, right half expert 1
    weights = np.where(assignment == 0, 0.9, 0.6)
    path = plot_expert_assignment(image, assignment, 4, tmp_path / "experts.png", weights=weights, title="layer 6")
    picture = _open_png(path).astype(int)
    tab10 = np.asarray(matplotlib.colormaps["tab10"].colors) * 255
    for expert in (0, 1):
        tinted = np.rint(0.5 * 128 + 0.5 * tab10[expert])
        close = np.all(np.abs(picture - tinted) <= 3, axis=-1)
        assert close.sum() > 5000, f"expert {expert} tint missing"
    unused = np.rint(0.5 * 128 + 0.5 * tab10[3])
    assert np.all(np.abs(picture - unused) <= 3, axis=-1).sum() < 2000  # legend swatch only
    with pytest.raises(ValueError, match="expert ids"):
        plot_expert_assignment(image, assignment + 3, 4, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="integer"):
        plot_expert_assignment(image, assignment.astype(float), 4, tmp_path / "bad.png")


def test_plots_leave_users_matplotlib_state_alone(tmp_path: Path) -> None:
    # the user chose the svg backend; plotting must neither switch it nor load pyplot
    # (checked before get_backend(), which itself imports pyplot)
    script = (
        "import sys, matplotlib, numpy as np; from zsad.analysis.plots import plot_matrix;"
        f"plot_matrix(np.eye(2), ['a', 'b'], r'{tmp_path / 'm.png'}', 't');"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported';"
        "assert matplotlib.get_backend().lower() == 'svg', matplotlib.get_backend()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MPLBACKEND": "svg"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
