"""A PNG file written a band of rows at a time, so no whole picture is ever held in memory.

Pillow encodes a PNG from a complete image in memory (4 bytes per RGB pixel: 400 MB
for 100 megapixels). :class:`PngBandWriter` writes the same format from bands of rows:
8-bit RGB or 16-bit grey, every row with the "Sub" filter (each byte minus the one a
pixel to its left, which suits smooth pictures), one zlib stream over all rows split
into IDAT chunks, and ``tEXt`` chunks for metadata (read back by Pillow as ``.text``).
"""
from __future__ import annotations

import struct
import zlib
from typing import Any, BinaryIO

import numpy as np

__all__ = ["PngBandWriter"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_SUB = 1
# mode -> (PNG bit depth, colour type, channels, numpy dtype of a row band)
_MODES = {"RGB": (8, 2, 3, np.dtype(np.uint8)), "I;16": (16, 0, 1, np.dtype(">u2"))}


class PngBandWriter:
    """Write a ``width x height`` PNG to an open binary file, band after band, top to bottom.

    ``write(band)`` takes uint8 ``(n, W, 3)`` for mode "RGB" or uint16 ``(n, W)`` for
    "I;16"; after exactly ``height`` rows, ``close()`` ends the file. ``text`` becomes
    tEXt chunks (keys and values must be Latin-1).
    """

    def __init__(self, handle: BinaryIO, width: int, height: int, mode: str, text: dict[str, Any] | None = None, level: int = 6):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        self.handle, self.width, self.height, self.mode = handle, width, height, mode
        depth, colour_type, self.channels, self.dtype = _MODES[mode]
        self.rows_written = 0
        self.compressor = zlib.compressobj(level)
        handle.write(_SIGNATURE)
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
        for key, value in (text or {}).items():
            self._chunk(b"tEXt", str(key).encode("latin-1") + b"\x00" + str(value).encode("latin-1", "replace"))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.handle.write(struct.pack(">I", len(data)) + kind + data)
        self.handle.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def write(self, band: np.ndarray) -> None:
        """Append rows: ``(n, W, 3)`` uint8 (RGB) or ``(n, W)`` uint16 (I;16)."""
        rows = np.ascontiguousarray(band, dtype=self.dtype)
        expected = (self.width, self.channels) if self.channels > 1 else (self.width,)
        if rows.shape[1:] != expected:
            raise ValueError(f"a band of this PNG must have shape (n, {', '.join(map(str, expected))}), got {rows.shape}")
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"more than {self.height} rows written")
        raw = rows.view(np.uint8).reshape(rows.shape[0], -1)
        step = self.channels * self.dtype.itemsize  # bytes per pixel
        filtered = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = _FILTER_SUB
        filtered[:, 1 : 1 + step] = raw[:, :step]
        np.subtract(raw[:, step:], raw[:, :-step], out=filtered[:, 1 + step :])  # wraps modulo 256 as PNG wants
        data = self.compressor.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self.rows_written += rows.shape[0]

    def close(self) -> None:
        if self.rows_written != self.height:
            raise ValueError(f"{self.rows_written} of {self.height} rows were written")
        self._chunk(b"IDAT", self.compressor.flush())
        self._chunk(b"IEND", b"")
