"""Robust reading of images and ground-truth masks from any layout we support.

``read_image`` always returns an 8-bit RGB :class:`PIL.Image.Image`;
``read_mask`` always returns a boolean ``(H, W)`` array at the file's own size.
Every failure (missing file, not an image, truncated data, a decoder error)
becomes an :class:`ImageReadError` carrying the path and a reason.

Decisions worth knowing:

* EXIF orientation is applied (``ImageOps.exif_transpose``) to images and masks
  alike, so a mask stays aligned with its image.
* Alpha is dropped, never composited: RGBA -> RGB and LA -> L keep the stored
  colour values. This is what CLIP's own preprocessing (``convert("RGB")``)
  sees, and for scans and photographs the alpha channel is opaque anyway.
* Palette (P) images are expanded through their palette.
* Images deeper than 8 bit (16-bit PNG/TIFF, 32-bit int or float) are scaled
  linearly by their actual maximum: ``v * 255 / max`` (values below zero are
  shifted up first), so a 12-bit scan stored in 16 bit uses the full 8-bit range
  instead of being clipped or left nearly black.
* TIFFs that Pillow cannot decode (e.g. CVC-ClinicDB's RGB TIFFs), or that it
  would reduce to 8 bit by dropping the low byte (16-bit RGB), are read with ``tifffile``.
* Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched; pixel
  data is decoded eagerly inside the ``try`` so a truncated file raises here.

Mask binarisation (foreground = True):

* JPEG masks (lossy, noisy around 0 and 255): value > 127.
* Lossless 8-bit masks (PNG, BMP, TIFF, ...): value > 127 when the mask uses
  the 0..255 range; when its largest value is below 128 it is a label map
  (0/1, or small instance ids as some data sets store them) and value > 0.
* 16-bit and deeper masks: value > 0 (label maps and 0/65535 masks alike).
* Multi-channel masks (RGB, palette): a pixel is foreground when any colour
  channel is, by the rules above applied to the per-pixel channel maximum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps

from .errors import ZsadError

__all__ = ["ImageReadError", "MaskSizeError", "read_image", "read_image_reduced", "read_mask"]

_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_LOSSY_FORMATS = frozenset({"JPEG", "MPO"})
# Pillow modes deeper than 8 bit: their pixels go through numpy and are scaled by their maximum.
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# EXIF orientations that swap width and height (transpose, rotate 90 / 270, transverse).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageReadError(ZsadError):
    """A file could not be read as an image; ``str(e) == f"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MaskSizeError(ZsadError, ValueError):
    """A mask's size differs from its image's size (the message names both files and sizes)."""


def read_image(path: str | Path) -> Image.Image:
    """Read any supported image file as 8-bit RGB.

    Returns:
        A loaded ``PIL.Image.Image`` in mode ``"RGB"`` (size ``(W, H)`` of the file,
        after EXIF orientation).

    Raises:
        ImageReadError: the file is missing, not an image, truncated or undecodable.
    """
    path = Path(path)
    decoded = _decode(path)
    try:
        if isinstance(decoded, Image.Image):
            return _pil_to_rgb(decoded)
        return Image.fromarray(_array_to_rgb(decoded))
    except (ValueError, OSError) as error:
        raise ImageReadError(path, f"cannot convert to RGB ({_describe(error)})") from error


def read_image_reduced(path: str | Path, side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Read an image for a model that sees it at ``side x side``, without paying for its full size.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves both sides at
    least ``side`` (the decoder's draft mode); any image is then shrunk by a whole
    factor per axis (box filter, ``Image.reduce``) as long as both sides stay at least
    ``side``. The model's own resize does the rest, so its input differs from a resize
    of the full image only by that prefiltering. A 100-megapixel JPEG costs a few
    megabytes this way instead of hundreds.

    Returns:
        The reduced RGB image and ``(W, H)`` of the full image (after EXIF orientation).

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    path = Path(path)
    decoded = _decode(path, draft_side=side)
    try:
        image = _pil_to_rgb(decoded) if isinstance(decoded, Image.Image) else Image.fromarray(_array_to_rgb(decoded))
    except (ValueError, OSError) as error:
        raise ImageReadError(path, f"cannot convert to RGB ({_describe(error)})") from error
    full_size = getattr(decoded, "full_size", image.size)
    factors = (max(1, image.width // side), max(1, image.height // side))
    if factors != (1, 1):
        image = image.reduce(factors)
    return image, full_size


def read_mask(
    path: str | Path,
    expected_size: tuple[int, int] | None,
    image_path: str | Path | None = None,
) -> np.ndarray:
    """Read a ground-truth mask file as a boolean array.

    Args:
        path: the mask file.
        expected_size: ``(W, H)`` the mask must have (its image's size), or None to
            accept any size.
        image_path: the image the mask belongs to, only used in error messages.

    Returns:
        ``(H, W)`` bool array at the file's size (see the module docstring for the
        binarisation rules).

    Raises:
        ImageReadError: the mask file cannot be read.
        MaskSizeError: ``expected_size`` is given and the mask's ``(W, H)`` differs.
    """
    path = Path(path)
    decoded = _decode(path)
    try:
        if isinstance(decoded, Image.Image):
            mask = _binarise(_drop_alpha(_pil_to_mask_array(decoded)), lossy=decoded.format in _LOSSY_FORMATS)
        else:
            mask = _binarise(_drop_alpha(decoded), lossy=False)
    except (ValueError, OSError) as error:
        raise ImageReadError(path, f"cannot convert to a mask ({_describe(error)})") from error
    height, width = mask.shape
    if expected_size is not None and (width, height) != tuple(expected_size):
        exp_w, exp_h = expected_size
        owner = f"image {image_path}" if image_path is not None else "the expected size"
        raise MaskSizeError(
            f"mask {path} is {width}x{height} (WxH) but {owner} is {exp_w}x{exp_h}"
        )
    return mask


def _decode(path: Path, draft_side: int | None = None) -> Image.Image | np.ndarray:
    """Decode a file fully: a loaded PIL image, or an array from tifffile.

    ``draft_side``: let a JPEG decoder skip detail beyond ``draft_side`` pixels a side
    (the image then carries ``full_size``, its undecoded ``(W, H)``).

    Raises ImageReadError with the reasons of every decoder that was tried.
    """
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    try:
        image, reduced_depth = _decode_with_pillow(path, draft_side)
    except Exception as pillow_error:  # decoders raise many exception types
        pillow_reason = _describe(pillow_error)
        if not _looks_like_tiff(path):
            raise ImageReadError(path, f"cannot decode image ({pillow_reason})") from pillow_error
    else:
        if not reduced_depth:
            return image
        try:  # keep the full depth so it can be scaled by its maximum
            return tifffile.imread(path)
        except Exception:  # e.g. a compression tifffile lacks a codec for: Pillow's 8-bit reading stands
            return image
    try:
        return tifffile.imread(path)
    except Exception as tiff_error:
        raise ImageReadError(
            path,
            f"cannot decode TIFF (Pillow: {pillow_reason}; tifffile: {_describe(tiff_error)})",
        ) from tiff_error


def _decode_with_pillow(path: Path, draft_side: int | None = None) -> tuple[Image.Image, bool]:
    """The loaded, EXIF-oriented image and whether Pillow reduced a deeper TIFF to 8 bit."""
    with Image.open(path) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(0x0112)
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        if draft_side is not None and opened.format == "JPEG":
            opened.draft(None, (draft_side, draft_side))
        opened.load()  # decode now so truncated data fails inside the caller's try
        reduced_depth = _pillow_reduced_tiff_depth(opened)
        # exif_transpose copies the image even when there is nothing to turn: skip it then.
        image = ImageOps.exif_transpose(opened) if orientation not in (None, 1) else opened
        image.load()
        image.format = opened.format
    image.full_size = (width, height)
    return image, reduced_depth


def _pillow_reduced_tiff_depth(image: Image.Image) -> bool:
    """Pillow opens 16-bit RGB TIFFs as 8-bit RGB by dropping the low byte; detect that."""
    if image.format != "TIFF" or image.mode in _DEEP_MODES:
        return False
    bits = image.tag_v2.get(258, 8)
    return max(bits) > 8 if isinstance(bits, tuple) else bits > 8


def _looks_like_tiff(path: Path) -> bool:
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return True
    with path.open("rb") as handle:
        return handle.read(4) in _TIFF_MAGIC


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _DEEP_MODES:
        return Image.fromarray(_array_to_rgb(np.asarray(image)))
    if image.mode in ("P", "PA"):
        # Expand through the palette; going via RGBA keeps palette transparency
        # from triggering Pillow's warning, and the alpha is then dropped.
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")  # L, LA, RGBA, 1, CMYK, YCbCr, ...: alpha dropped


def _pil_to_mask_array(image: Image.Image) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` values of a mask image (palette expanded to colours)."""
    if image.mode in _DEEP_MODES or image.mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image)
    if image.mode in ("P", "PA"):
        return np.asarray(image.convert("RGBA"))
    if image.mode == "1":
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def _drop_alpha(array: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` -> the same without an alpha channel (C in 2, 4)."""
    array = _channels_last(array)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[:, :, : array.shape[2] - 1]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def _channels_last(array: np.ndarray) -> np.ndarray:
    """tifffile may return planar ``(C, H, W)``; bring it to ``(H, W, C)``."""
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[2] not in (1, 2, 3, 4):
        return np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3):
        raise ValueError(f"unsupported image array shape {array.shape}")
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 by its actual maximum (``v * 255 / max``)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    low = values.min() if values.size else 0.0
    if low < 0:
        values = values - low
    high = values.max() if values.size else 0.0
    if high <= 0:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.clip(np.rint(values * (255.0 / high)), 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Any decoded array -> ``(H, W, 3)`` uint8."""
    rgb = _to_uint8(_drop_alpha(array))
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.shape[2] != 3:
        raise ValueError(f"unsupported number of channels {rgb.shape[2]}")
    return np.ascontiguousarray(rgb)


def _binarise(array: np.ndarray, lossy: bool) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` mask values -> ``(H, W)`` bool foreground."""
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.dtype == bool:
        return array.copy()
    if array.dtype != np.uint8:
        return array > 0
    if lossy or array.max(initial=0) >= 128:
        return array > 127
    return array > 0
