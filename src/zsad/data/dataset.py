"""The torch Dataset over a list of samples, and its collate function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from zsad.data.sample import Sample
from zsad.data.transforms import EvalTransform, resize_image, resize_mask
from zsad.imageio import ImageReadError, MaskSizeError, read_image, read_mask
from zsad.maps import REFERENCE_SIZE

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
        ``image`` float32 ``(3, S, S)`` CLIP-normalised; ``mask`` float32 ``(1, S, S)`` in
        {0, 1} (zeros without a mask); ``has_mask`` bool (the mask is a real pixel label);
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
                    mask_array = read_mask(sample.mask_path, pil_image.size, sample.image_path)
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
                mask_array = read_mask(sample.mask_path, pil_image.size, sample.image_path)
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


def collate(items: list[dict]) -> dict:
    """Batch item dicts: tensors are stacked, bools/ints/floats become tensors, strings stay lists.

    Returns e.g. ``image`` ``(B, 3, S, S)``, ``mask`` ``(B, 1, S, S)``, ``label`` int64 ``(B,)``,
    ``has_mask`` bool ``(B,)``, ``original_size`` ``(B, 2)``, ``path`` list[str].
    """
    if not items:
        raise ValueError("cannot collate an empty list of items")
    batch: dict = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch
