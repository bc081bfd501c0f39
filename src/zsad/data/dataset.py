"""The torch Dataset over a list of samples, and its collate function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..imageio import ImageReadError, MaskSizeError, read_image
from ..maps import REFERENCE_SIZE
from .augment import AugmentParams
from .masks import read_sample_mask
from .sample import Sample
from .transforms import EvalTransform, resize_image, resize_mask

Transform = Callable[[Image.Image, np.ndarray | None], tuple[torch.Tensor, torch.Tensor]]
UNKNOWN_LABEL = -1


class AnomalyDataset(Dataset):
    """Images of one data set with their labels and masks, ready for a DataLoader.

    Attributes:
        kind: data-set kind ("mvtec", "kvasir", ...).
        root: the folder (or manifest file) it was read from.
        samples: one :class:`Sample` per item.
        has_masks: pixel labels exist for this set (normal images then have all-zero masks).
        has_image_labels: both normal and anomalous images are present, so image-level
            metrics are defined.

    Each item is a dict:
        ``image`` ``(3, S, S)`` and ``mask`` ``(1, S, S)`` in {0, 1} (zeros without a mask)
        as the transform returns them (default ``EvalTransform``: float32, the image
        CLIP-normalised; ``ResizeTransform``: uint8); ``has_mask`` bool (the mask is a real pixel label);
        ``label`` int (1, 0, or -1 unknown); ``class_name`` str; ``path`` str;
        ``original_size`` int64 ``[H, W]`` of the file; ``error`` str ("" when fine,
        otherwise the read error, with zero tensors, so a loader never dies on one file).
    """

    def __init__(
        self,
        kind: str,
        root: Path,
        samples: list[Sample],
        has_masks: bool,
        image_size: int = REFERENCE_SIZE,
        transform: Transform | None = None,
    ) -> None:
        self.kind = kind
        self.root = Path(root)
        self.samples = list(samples)
        self.has_masks = has_masks
        self.has_image_labels = {0, 1} <= {s.label for s in self.samples}
        self.image_size = image_size
        self.transform = transform if transform is not None else EvalTransform(image_size)
        # index -> (image resized to S x S, its mask at S x S or None, (H, W) of the file)
        self._resized: dict[int, tuple[Image.Image, np.ndarray | None, tuple[int, int]]] = {}

    def resized_bytes(self) -> int:
        """Memory :meth:`cache_resized` needs: uint8 RGB + mask at S x S per item."""
        return len(self.samples) * 4 * self.image_size**2

    def cache_resized(self) -> None:
        """Decode every file once and keep it resized to S x S, so later epochs skip the
        decoding and the resize. Items from the cache equal items from the files (the
        transforms' resize to S x S is then the identity). Unreadable files stay out of
        the cache and are reported when read. Memory: :meth:`resized_bytes`."""
        for index, sample in enumerate(self.samples):
            try:
                pil_image = read_image(sample.image_path)
                mask_array = None
                if sample.mask_path is not None:
                    mask_array = read_sample_mask(sample.mask_path, pil_image.size, sample.image_path)
            except (ImageReadError, MaskSizeError):
                continue
            resized = Image.fromarray(resize_image(pil_image, self.image_size).permute(1, 2, 0).numpy())
            mask = None if mask_array is None else resize_mask(mask_array, self.image_size)[0].numpy() != 0
            self._resized[index] = (resized, mask, (pil_image.height, pil_image.width))

    @property
    def classes(self) -> list[str]:
        """Sorted category keys present in this data set."""
        return sorted({s.class_name for s in self.samples})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        size = self.image_size
        image = torch.zeros(3, size, size)
        mask = torch.zeros(1, size, size)
        original_size = torch.zeros(2, dtype=torch.int64)
        error = ""
        if index in self._resized:
            pil_image, mask_array, (height, width) = self._resized[index]
            image, mask = self.transform(pil_image, mask_array)
            original_size = torch.tensor([height, width], dtype=torch.int64)
            return self._item(sample, image, mask, original_size, error)
        try:
            pil_image = read_image(sample.image_path)
            original_size = torch.tensor([pil_image.height, pil_image.width], dtype=torch.int64)
            mask_array = None
            if sample.mask_path is not None:
                mask_array = read_sample_mask(sample.mask_path, pil_image.size, sample.image_path)
            image, mask = self.transform(pil_image, mask_array)
        except (ImageReadError, MaskSizeError) as read_error:
            error = str(read_error)
        return self._item(sample, image, mask, original_size, error)

    def _item(self, sample: Sample, image: torch.Tensor, mask: torch.Tensor, original_size: torch.Tensor, error: str) -> dict:
        return {
            "image": image,
            "mask": mask,
            "has_mask": self.has_masks and not error,
            "label": UNKNOWN_LABEL if sample.label is None else int(sample.label),
            "class_name": sample.class_name,
            "path": str(sample.image_path),
            "original_size": original_size,
            "error": error,
        }

    def __repr__(self) -> str:
        return (
            f"AnomalyDataset(kind={self.kind!r}, root='{self.root}', samples={len(self)}, "
            f"classes={len(self.classes)}, has_masks={self.has_masks}, has_image_labels={self.has_image_labels})"
        )


@dataclass
class Batch:
    """The readable items of a list of dataset items, batched; the unreadable ones are
    only named (what every consumer skips, dropped once here).

    images (B, 3, S, S); masks (B, 1, S, S) (dtypes as the transform gave them); has_mask
    bool (B,); labels int64 (B,) (-1 unknown); original_sizes int64 (B, 2) as (H, W);
    class_names, paths: (B,) lists; positions: (B,) index of each readable item in the
    collated list; unreadable: (path, error) of each item that could not be read, in
    order; size: all items; augment: the items' augmentation choices (training items
    carry them under ``"augment"``), None when they carry none.
    """

    images: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    labels: torch.Tensor
    original_sizes: torch.Tensor
    class_names: list[str]
    paths: list[str]
    positions: list[int]
    unreadable: list[tuple[str, str]]
    size: int
    augment: AugmentParams | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (what ``DataLoader(pin_memory=True)`` calls)."""
        return replace(
            self,
            images=self.images.pin_memory(),
            masks=self.masks.pin_memory(),
            has_mask=self.has_mask.pin_memory(),
            labels=self.labels.pin_memory(),
            original_sizes=self.original_sizes.pin_memory(),
            augment=None if self.augment is None else self.augment.pin_memory(),
        )


def collate(items: list[dict]) -> Batch:
    """Batch dataset items (``AnomalyDataset.__getitem__`` dicts), dropping the unreadable."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    rows = [i for i, item in enumerate(items) if not item["error"]]

    def stacked(key: str) -> torch.Tensor:
        if rows:  # the unreadable items' zero tensors may differ in dtype: left out
            return torch.stack([items[i][key] for i in rows])
        return torch.stack([item[key] for item in items])[:0]  # nothing readable: no rows, same shape

    return Batch(
        images=stacked("image"),
        masks=stacked("mask"),
        has_mask=torch.tensor([items[i]["has_mask"] for i in rows], dtype=torch.bool),
        labels=torch.tensor([items[i]["label"] for i in rows], dtype=torch.int64),
        original_sizes=stacked("original_size"),
        class_names=[items[i]["class_name"] for i in rows],
        paths=[items[i]["path"] for i in rows],
        positions=rows,
        unreadable=[(item["path"], item["error"]) for item in items if item["error"]],
        size=len(items),
        augment=AugmentParams.stack([items[i]["augment"] for i in rows]) if rows and "augment" in items[0] else None,
    )
