"""The standardised patch tokens of a set of images, in memory or spilled to disk.

A ViT-L set holds 4 taps x L x C = 4 x 1369 x 1024 float32 per image (22 MB): 4.5 GB
at N = 200. Up to ``memory_bytes`` they stay in memory; beyond it everything appended so
far and after goes to one raw float32 file per tap, read back as a memory-mapped
array (the same idea as :mod:`zsad.engine.map_spill` for maps), so the process holds one
distance block of them at a time.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Self

import numpy as np
import torch


class TokenStore:
    """Append-only (N, L, C) float32 tokens of several taps.

    taps: the tapped blocks; memory_bytes: the most bytes held in memory before spilling;
    spill_dir: where the spill files go (None = the system's temporary folder), removed
    by :meth:`close`."""

    def __init__(self, taps: tuple[int, ...], memory_bytes: int, spill_dir: Path | None = None):
        self.taps = tuple(taps)
        self.memory_bytes = memory_bytes
        self.spill_dir = spill_dir
        self._chunks: dict[int, list[np.ndarray]] = {tap: [] for tap in self.taps}
        self._files: dict[int, object] = {}
        self._folder: tempfile.TemporaryDirectory | None = None
        self._shape: tuple[int, int] | None = None
        self.count = 0

    @property
    def spilled(self) -> bool:
        return self._folder is not None

    def __len__(self) -> int:
        return self.count

    def append(self, tokens: dict[int, torch.Tensor]) -> None:
        """tokens: tap -> (B, L, C) standardised tokens of B more images."""
        arrays = {tap: tokens[tap].detach().float().cpu().numpy() for tap in self.taps}
        batch, *shape = arrays[self.taps[0]].shape
        if self._shape is None:
            self._shape = tuple(shape)
        elif tuple(shape) != self._shape:
            raise ValueError(f"tokens of shape {tuple(shape)} do not match the store's {self._shape}")
        if not self.spilled and 4 * (self.count + batch) * int(np.prod(shape)) * len(self.taps) > self.memory_bytes:
            self._spill()
        for tap, array in arrays.items():
            if self.spilled:
                self._files[tap].write(np.ascontiguousarray(array).tobytes())
            else:
                self._chunks[tap].append(array)
        self.count += batch

    def _spill(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="zsad-musc-", dir=self.spill_dir)
        for tap in self.taps:
            handle = open(Path(self._folder.name) / f"tap{tap}.f32", "wb")  # noqa: SIM115 (open until close())
            handle.writelines(np.ascontiguousarray(chunk).tobytes() for chunk in self._chunks[tap])
            self._chunks[tap] = []
            self._files[tap] = handle

    def tokens(self, tap: int) -> np.ndarray:
        """(N, L, C) float32 of one tap: an array, or a read-only memory map when spilled."""
        if self._shape is None:
            raise ValueError("the store is empty")
        if not self.spilled:
            if len(self._chunks[tap]) > 1:  # joined once, then kept as one array
                self._chunks[tap] = [np.concatenate(self._chunks[tap])]
            return self._chunks[tap][0]
        self._files[tap].flush()
        return np.memmap(self._files[tap].name, dtype=np.float32, mode="r", shape=(self.count, *self._shape))

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files = {}
        self._chunks = {tap: [] for tap in self.taps}
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
