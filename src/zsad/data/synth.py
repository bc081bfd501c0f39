"""Synthetic anomaly-detection data in the exact MVTec-AD and VisA layouts.

Eight procedural categories: four textures (``stripes``, ``checker``, ``carpet``, ``wood``)
and four objects on a dark background (``disc``, ``tile``, ``ring``, ``cross``). Normal
images vary in phase, angle, position and colour; four defect kinds are painted on them,
each with its exact pixel mask:

* ``scratch``: a thin straight line whose brightness is pushed far from the surface's;
* ``hole``: a dark blob with a wobbly edge;
* ``stain``: an ellipse tinted with a saturated colour;
* ``cut``: a missing piece (a bite out of an object's edge showing the background, or a
  dark triangular tear in a texture).

Every painted pixel changes and no other pixel does, so a mask is exactly the set of
changed pixels (in the lossless MVTec layout; VisA's JPEGs blur this at the edges).
Surfaces keep every channel in [60, 230] and objects in [90, 230] over a background in
[20, 55], which is what makes the painting rules above always visible.

``TRAIN_CATEGORIES`` and ``TEST_CATEGORIES`` split the categories into two disjoint groups
(two textures and two objects each) for the zero-shot protocol: train on one, test on the other.
Generation is deterministic given the seed, and each category has its own random stream, so
generating a subset of categories yields the same images as generating all of them.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from .synth_categories import CATEGORIES, OBJECT_CATEGORIES, TEST_CATEGORIES, TEXTURE_CATEGORIES, TRAIN_CATEGORIES

DEFECT_KINDS = ("scratch", "hole", "stain", "cut")

_SURFACE_RANGE = (60.0, 230.0)
_OBJECT_RANGE = (90.0, 230.0)
_BACKGROUND_RANGE = (20.0, 55.0)
_TEAR_COLOUR = np.array([18, 18, 22], dtype=np.float64)
# Each stain colour has a channel at 0, so it differs from every surface pixel (>= 60).
_STAIN_COLOURS = np.array([[170, 90, 0], [0, 90, 200], [20, 150, 0], [120, 0, 140]], dtype=np.float64)


@dataclass(frozen=True)
class NormalImage:
    """A defect-free rendering.

    Attributes:
        image: ``(H, W, 3)`` uint8.
        surface: ``(H, W)`` bool, where defects may be painted (the object, or all of a texture).
        background: ``(H, W, 3)`` uint8 shown where an object has a piece missing (None for textures).
    """

    image: np.ndarray
    surface: np.ndarray
    background: np.ndarray | None


def category_rng(category: str, seed: int) -> np.random.Generator:
    """The random stream of one category (stable across runs and category subsets)."""
    return np.random.default_rng([seed, zlib.crc32(category.encode())])


def render_normal(category: str, size: int, rng: np.random.Generator) -> NormalImage:
    """Render one defect-free image of ``category`` at ``size x size``."""
    if category in TEXTURE_CATEGORIES:
        texture = _TEXTURES[category](_grid(size), rng)
        image = np.clip(texture + rng.normal(0, 3, texture.shape), *_SURFACE_RANGE)
        return NormalImage(_to_uint8(image), np.ones((size, size), dtype=bool), None)
    if category in OBJECT_CATEGORIES:
        grid = _grid(size)
        background = _background(grid, rng)
        colour, shape = _OBJECTS[category](grid, rng)
        colour = np.clip(colour + rng.normal(0, 3, colour.shape), *_OBJECT_RANGE)
        image = np.where(shape[:, :, None], colour, background)
        return NormalImage(_to_uint8(image), shape, _to_uint8(background))
    raise ValueError(f"unknown synthetic category {category!r}; categories: {', '.join(CATEGORIES)}")


def add_defect(normal: NormalImage, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``kind`` on ``normal``.

    Returns:
        image ``(H, W, 3)`` uint8 and mask ``(H, W)`` bool; the mask is exactly the set of
        pixels that differ from ``normal.image``.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; kinds: {', '.join(DEFECT_KINDS)}")
    size = normal.image.shape[0]
    min_pixels = max(12, int(0.002 * size * size))
    for _ in range(100):
        mask = _defect_region(normal, kind, rng) & normal.surface
        if mask.sum() >= min_pixels:
            break
    else:
        raise RuntimeError(f"could not place a {kind} defect of at least {min_pixels} pixels")
    image = normal.image.astype(np.float64)
    painted = _paint(image, normal, kind, rng)
    image[mask] = painted[mask]
    return _to_uint8(image), mask


def generate_mvtec_like(
    out_dir: str | Path,
    categories: list[str] | None = None,
    n_train: int = 4,
    n_good: int = 4,
    n_defect_per_kind: int = 3,
    size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Write the exact MVTec-AD layout under ``out_dir``.

    ``CAT/train/good/000.png``, ``CAT/test/good/000.png``, ``CAT/test/DEFECT/000.png`` and
    ``CAT/ground_truth/DEFECT/000_mask.png`` (8-bit RGB PNG images, 0/255 L PNG masks).

    Returns:
        The categories written (default: all of :data:`CATEGORIES`).
    """
    out_dir = Path(out_dir)
    categories = _check_categories(categories)
    for category in categories:
        rng = category_rng(category, seed)
        root = out_dir / category
        for index in range(n_train):
            _save_png(render_normal(category, size, rng).image, root / "train" / "good" / f"{index:03d}.png")
        for index in range(n_good):
            _save_png(render_normal(category, size, rng).image, root / "test" / "good" / f"{index:03d}.png")
        for kind in DEFECT_KINDS:
            for index in range(n_defect_per_kind):
                image, mask = add_defect(render_normal(category, size, rng), kind, rng)
                _save_png(image, root / "test" / kind / f"{index:03d}.png")
                _save_png(mask.astype(np.uint8) * 255, root / "ground_truth" / kind / f"{index:03d}_mask.png")
    return categories


def generate_visa_like(
    out_dir: str | Path,
    categories: list[str] | None = None,
    n_train: int = 4,
    n_good: int = 4,
    n_defect_per_kind: int = 3,
    size: int = 128,
    seed: int = 0,
) -> list[str]:
    """Write the exact VisA layout under ``out_dir``, with ``split_csv/1cls.csv``.

    ``CAT/Data/Images/Normal/0000.JPG`` (train images first, then test ones),
    ``CAT/Data/Images/Anomaly/000.JPG`` (``n_defect_per_kind`` of each defect kind, in turn),
    ``CAT/Data/Masks/Anomaly/000.png`` (0/255 L PNG) and the csv with columns
    ``object,split,label,image,mask`` (paths relative to ``out_dir``; ``mask`` empty for
    normal images).

    Returns:
        The categories written (default: all of :data:`CATEGORIES`).
    """
    out_dir = Path(out_dir)
    categories = _check_categories(categories)
    rows: list[tuple[str, str, str, str, str]] = []
    for category in categories:
        rng = category_rng(category, seed)
        data = Path(category) / "Data"
        for index in range(n_train + n_good):
            relative = data / "Images" / "Normal" / f"{index:04d}.JPG"
            _save_jpeg(render_normal(category, size, rng).image, out_dir / relative)
            split = "train" if index < n_train else "test"
            rows.append((category, split, "normal", relative.as_posix(), ""))
        for index in range(n_defect_per_kind * len(DEFECT_KINDS)):
            kind = DEFECT_KINDS[index % len(DEFECT_KINDS)]
            image, mask = add_defect(render_normal(category, size, rng), kind, rng)
            image_rel = data / "Images" / "Anomaly" / f"{index:03d}.JPG"
            mask_rel = data / "Masks" / "Anomaly" / f"{index:03d}.png"
            _save_jpeg(image, out_dir / image_rel)
            _save_png(mask.astype(np.uint8) * 255, out_dir / mask_rel)
            rows.append((category, "test", "anomaly", image_rel.as_posix(), mask_rel.as_posix()))
    csv_path = out_dir / "split_csv" / "1cls.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return categories


def _check_categories(categories: list[str] | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise InvalidInputError(f"unknown synthetic categories {unknown}; categories: {', '.join(CATEGORIES)}")
    if not categories:
        raise InvalidInputError("no categories selected")
    return list(categories)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _save_jpeg(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=95)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- procedural rendering -------------------------------------------------------------
# A grid is (x, y), each (H, W) float in [0, 1): pixel centres in image units.
Grid = tuple[np.ndarray, np.ndarray]


def _grid(size: int) -> Grid:
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords)


def _mix(colour0: np.ndarray, colour1: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-pixel blend ``(1 - w) * c0 + w * c1``: ``(H, W)`` weights -> ``(H, W, 3)``."""
    return colour0 + (colour1 - colour0) * weight[:, :, None]


def _jittered(colour: tuple[int, int, int], rng: np.random.Generator, amount: float = 8.0) -> np.ndarray:
    return np.asarray(colour, dtype=np.float64) + rng.uniform(-amount, amount, 3)


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size)`` noise in about [-1, 1], bilinear upsampling of a ``cells x cells`` grid."""
    coarse = Image.fromarray(rng.uniform(-1, 1, (cells, cells)).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)


def _rotated(grid: Grid, angle: float, centre: tuple[float, float] = (0.5, 0.5)) -> Grid:
    x, y = grid[0] - centre[0], grid[1] - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * x + sin * y, -sin * x + cos * y


def _stripes(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    u, _ = _rotated(grid, np.deg2rad(30 + rng.normal(0, 3)))
    weight = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6.5, 7.5) * u + rng.uniform(0, 2 * np.pi))
    return _mix(_jittered((70, 90, 150), rng), _jittered((190, 200, 220), rng), weight)


def _checker(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    u, v = _rotated(grid, np.deg2rad(rng.normal(0, 2)))
    cells = 8
    parity = (np.floor(u * cells + rng.uniform(0, 1)) + np.floor(v * cells + rng.uniform(0, 1))) % 2
    return _mix(_jittered((85, 85, 90), rng), _jittered((200, 190, 165), rng), parity)


def _carpet(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    size = grid[0].shape[0]
    weight = 0.5 + 0.3 * _smooth_noise(size, 12, rng) + 0.2 * _smooth_noise(size, max(2, size // 4), rng)
    return _mix(_jittered((110, 70, 65), rng), _jittered((200, 130, 110), rng), np.clip(weight, 0, 1))


def _wood(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    x, y = grid
    centre_x, centre_y = rng.uniform(-0.6, -0.3), rng.uniform(0.2, 0.8)
    radius = np.sqrt((x - centre_x) ** 2 + (3.0 * (y - centre_y)) ** 2)
    warp = 0.4 * _smooth_noise(x.shape[0], 6, rng)
    weight = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(9, 11) * radius + warp)
    return _mix(_jittered((125, 82, 60), rng), _jittered((205, 155, 100), rng), weight)


def _background(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    size = grid[0].shape[0]
    base = _jittered((35, 37, 42), rng, amount=3.0)
    shade = 5.0 * _smooth_noise(size, 4, rng)
    background = base + shade[:, :, None] + rng.normal(0, 1.5, (size, size, 3))
    return np.clip(background, *_BACKGROUND_RANGE)


def _object_centre(rng: np.random.Generator) -> tuple[float, float]:
    return 0.5 + rng.normal(0, 0.02), 0.5 + rng.normal(0, 0.02)


def _disc(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = _object_centre(rng)
    radius = rng.uniform(0.28, 0.32)
    distance = np.hypot(grid[0] - centre[0], grid[1] - centre[1])
    shading = 1.0 - 0.2 * distance / radius
    return _jittered((215, 185, 125), rng)[None, None] * shading[:, :, None], distance <= radius


def _tile(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = _object_centre(rng)
    u, v = _rotated(grid, np.deg2rad(rng.uniform(-8, 8)), centre)
    half = rng.uniform(0.26, 0.3)
    shading = 0.85 + 0.15 * (u + half) / (2 * half)
    colour = _jittered((150, 170, 200), rng)[None, None] * shading[:, :, None]
    return colour, (np.abs(u) <= half) & (np.abs(v) <= half)


def _ring(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = _object_centre(rng)
    outer, inner = rng.uniform(0.32, 0.36), rng.uniform(0.17, 0.2)
    distance = np.hypot(grid[0] - centre[0], grid[1] - centre[1])
    angle = np.arctan2(grid[1] - centre[1], grid[0] - centre[0])
    shading = 0.9 + 0.1 * np.cos(angle - rng.uniform(0, 2 * np.pi))
    colour = _jittered((195, 195, 205), rng)[None, None] * shading[:, :, None]
    return colour, (distance <= outer) & (distance >= inner)


def _cross(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centre = _object_centre(rng)
    u, v = _rotated(grid, np.deg2rad(rng.uniform(-10, 10)), centre)
    arm, half_width = rng.uniform(0.3, 0.34), rng.uniform(0.09, 0.11)
    shape = ((np.abs(u) <= half_width) & (np.abs(v) <= arm)) | ((np.abs(v) <= half_width) & (np.abs(u) <= arm))
    shading = 0.9 + 0.1 * np.cos(3 * np.hypot(u, v) / arm)
    return _jittered((125, 200, 145), rng)[None, None] * shading[:, :, None], shape


# texture: grid -> (H, W, 3) colours; object: grid -> ((H, W, 3) colours, (H, W) bool shape)
_TEXTURES: dict[str, Callable[[Grid, np.random.Generator], np.ndarray]] = {
    "stripes": _stripes,
    "checker": _checker,
    "carpet": _carpet,
    "wood": _wood,
}
_OBJECTS: dict[str, Callable[[Grid, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "disc": _disc,
    "tile": _tile,
    "ring": _ring,
    "cross": _cross,
}


# --- defects --------------------------------------------------------------------------


def _defect_region(normal: NormalImage, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` bool region of one defect (before clipping to the surface)."""
    size = normal.image.shape[0]
    x, y = _grid(size)
    if kind == "cut" and normal.background is not None:
        centre = _random_pixel(_edge(normal.surface), rng, size)  # a bite out of the object's edge
        return np.hypot(x - centre[0], y - centre[1]) <= rng.uniform(0.1, 0.15)
    centre = _random_pixel(normal.surface & _inner_box(size), rng, size)
    if kind == "scratch":
        direction = rng.uniform(0, np.pi)
        length = rng.uniform(0.25, 0.4)
        half_width = max(1.0, size / 96) / size
        end = (centre[0] + length * np.cos(direction), centre[1] + length * np.sin(direction))
        return _segment_distance(x, y, centre, end) <= half_width
    if kind == "hole":
        angle = np.arctan2(y - centre[1], x - centre[0])
        wobble = 1 + 0.25 * np.sin(rng.integers(3, 6) * angle + rng.uniform(0, 2 * np.pi))
        return np.hypot(x - centre[0], y - centre[1]) <= rng.uniform(0.05, 0.08) * wobble
    if kind == "stain":
        u, v = _rotated((x, y), rng.uniform(0, np.pi), centre)
        return (u / rng.uniform(0.08, 0.14)) ** 2 + (v / rng.uniform(0.05, 0.09)) ** 2 <= 1
    # cut in a texture: a triangular tear around the centre
    angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
    radii = rng.uniform(0.07, 0.13, 3)
    corners = [(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)) for r, a in zip(radii, angles)]
    return _inside_triangle(x, y, corners)


def _paint(image: np.ndarray, normal: NormalImage, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The defect's appearance over the whole ``(H, W, 3)`` image (the caller keeps only the mask's pixels)."""
    if kind == "scratch":  # push brightness 110 levels away from the surface's own
        luminance = image.mean(axis=2, keepdims=True)
        return np.clip(image + np.where(luminance < 128, 110.0, -110.0), 0, 255)
    if kind == "hole":
        return image * 0.18
    if kind == "stain":
        return 0.4 * image + 0.6 * _STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))]
    if normal.background is not None:
        return normal.background.astype(np.float64)
    return np.broadcast_to(_TEAR_COLOUR, image.shape)


def _inner_box(size: int) -> np.ndarray:
    x, y = _grid(size)
    return (x > 0.2) & (x < 0.8) & (y > 0.2) & (y < 0.8)


def _edge(shape: np.ndarray) -> np.ndarray:
    """Pixels of ``shape`` with at least one 4-neighbour outside it."""
    padded = np.pad(shape, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return shape & ~interior


def _random_pixel(candidates: np.ndarray, rng: np.random.Generator, size: int) -> tuple[float, float]:
    rows, cols = np.nonzero(candidates)
    pick = rng.integers(len(rows))
    return (cols[pick] + 0.5) / size, (rows[pick] + 0.5) / size


def _segment_distance(
    x: np.ndarray, y: np.ndarray, start: tuple[float, float], end: tuple[float, float]
) -> np.ndarray:
    """Per-pixel distance to the segment ``start``-``end`` (image units)."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _inside_triangle(x: np.ndarray, y: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    def side(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
        return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])

    a, b, c = corners
    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
