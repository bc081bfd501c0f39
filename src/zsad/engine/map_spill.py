"""Anomaly maps and masks of one class kept on disk while a data set is evaluated.

``zsad test`` needs every map of a class for the exact pixel metrics. Held in memory that
is ~1.1 MB per image at 518 px (2.3 GB for a VisA-sized class); spilled here, the process
holds one chunk at a time and :func:`zsad.metrics.pixel_metrics_streamed` reads the
chunks back (the metric values are the same as from the maps in memory).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

DEFAULT_CHUNK_BYTES = 64 * 2**20


class SpilledMaps:
    """Append-only (S, S) float32 maps and bool masks in two raw files under ``folder``.

    folder: an existing folder owned by the caller (e.g. a TemporaryDirectory);
    name: file-name stem (unique within the folder); shape: (S, S) of every map.
    """

    def __init__(self, folder: Path, name: str, shape: tuple[int, int]):
        self.shape = tuple(shape)
        self.maps_path = Path(folder) / f"{name}.maps.f32"
        self.masks_path = Path(folder) / f"{name}.masks.u8"
        self._maps = open(self.maps_path, "wb")
        self._masks = open(self.masks_path, "wb")
        self.count = 0

    def append(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """anomaly_map: (S, S) float; mask: (S, S) bool or {0, 1}."""
        if anomaly_map.shape != self.shape or mask.shape != self.shape:
            raise ValueError(f"map {anomaly_map.shape} / mask {mask.shape} do not match the store's {self.shape}")
        self._maps.write(np.ascontiguousarray(anomaly_map, dtype=np.float32).tobytes())
        self._masks.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(maps (n, S, S) float32, masks (n, S, S) bool) in append order, n images of
        at most ``chunk_bytes`` of maps each (at least one image)."""
        for handle in (self._maps, self._masks):
            if not handle.closed:
                handle.flush()
        pixels = self.shape[0] * self.shape[1]
        per_chunk = max(1, chunk_bytes // (4 * pixels))
        with open(self.maps_path, "rb") as maps_file, open(self.masks_path, "rb") as masks_file:
            for start in range(0, self.count, per_chunk):
                n = min(per_chunk, self.count - start)
                maps = np.fromfile(maps_file, dtype=np.float32, count=n * pixels).reshape(n, *self.shape)
                masks = np.fromfile(masks_file, dtype=np.uint8, count=n * pixels).reshape(n, *self.shape) != 0
                yield maps, masks

    def close(self) -> None:
        self._maps.close()
        self._masks.close()
