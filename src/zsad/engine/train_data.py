"""Training data: concatenated data sets, a reproducible per-epoch order, per-image seeds.

Reproducibility scheme (what makes a resumed run repeat the straight run exactly):

* the order of epoch ``e`` is a permutation drawn from a generator seeded with
  ``derive_seed(seed, e)``, the same on every process; under torchrun each rank takes
  every ``world_size``-th position of it;
* image ``i`` of epoch ``e`` is loaded (and augmented) under torch's global generator
  seeded with ``derive_seed(seed, e, i)``, inside ``fork_rng`` so nothing leaks out;
  this holds in worker processes too;
* the training loop reseeds python/numpy/torch at each epoch start (dropout etc.).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from ..data import AnomalyDataset, Batch, build_dataset
from ..data.augment import AugmentSampler, augment_batch
from ..data.transforms import ResizeTransform, clip_normalize, unit_range
from ..errors import InvalidInputError
from .manifest import dataset_entry
from .train_config import TrainingConfig

ItemKey = tuple[int, int]  # (epoch, index into the concatenated data set)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. (seed, epoch, index)); different
    tuples give unrelated seeds, unlike ``seed + epoch``."""
    words = np.random.SeedSequence([int(part) for part in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(length: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Indices of ``range(length)`` that process ``rank`` visits in epoch ``epoch``.

    One permutation per (seed, epoch), shared by all ranks; it is padded by repeating its
    start until its length divides by ``world_size`` (so every rank runs the same number
    of steps), then rank r takes positions r, r + world_size, ...
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    order = torch.randperm(length, generator=generator).tolist()
    padding = (-length) % world_size
    order += (order * (padding // max(length, 1) + 1))[:padding]
    return order[rank::world_size]


class EpochSampler(Sampler[ItemKey]):
    """Yields ``(epoch, index)`` keys in :func:`epoch_order` (the epoch travels with each
    key, so per-image seeds stay right in worker processes)."""

    def __init__(self, length: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        self.epoch = epoch
        self.order = epoch_order(length, seed, epoch, rank, world_size)

    def __iter__(self) -> Iterator[ItemKey]:
        return iter((self.epoch, index) for index in self.order)

    def __len__(self) -> int:
        return len(self.order)


class SeededItems(Dataset):
    """Wraps a data set so that item ``(epoch, index)`` carries, under ``"augment"``, the
    augmentation choices (:class:`AugmentParams`) that ``sampler`` draws from a generator
    seeded with ``derive_seed(seed, epoch, index)``; without a sampler the items are the
    data set's own."""

    def __init__(self, dataset: Dataset, seed: int, sampler: AugmentSampler | None = None):
        self.dataset = dataset
        self.seed = seed
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: ItemKey) -> dict:
        epoch, index = key
        item = self.dataset[index]
        if self.sampler is not None:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index))
            item["augment"] = self.sampler.draw(generator).encode()
        return item


@dataclass
class TrainingData:
    """The concatenated training set and, per data spec, its images and categories."""

    dataset: SeededItems
    image_counts: dict[str, int]
    categories: list[str]
    manifest_entries: list[dict] = field(default_factory=list)  # see manifest.dataset_entry


def image_cache_budget(processes_per_machine: int = 1, cap: int = 8 * 2**30) -> int:
    """Bytes one training process may spend on resized images: a quarter of the memory
    available now, shared by the machine's training processes, at most ``cap``
    (0 where the OS does not say)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
    return min(cap, available // 4 // max(1, processes_per_machine))


def build_training_data(
    specs: list[str], image_size: int, config: TrainingConfig, cache_budget: int = 0
) -> TrainingData:
    """Read every ``KIND:PATH`` spec (its test split, plus train/good with
    ``include_train_split``) and concatenate them. Items are uint8 images and masks at
    S x S (``ResizeTransform``) with, when ``config.augment``, their augmentation choices.
    With ``config.cache_images`` and a set that fits ``cache_budget`` bytes, every image
    is decoded and resized once, here (worker processes inherit the cache)."""
    if not specs:
        raise InvalidInputError("training needs at least one data set (--data KIND:PATH)")
    parts: list[AnomalyDataset] = []
    for spec in specs:
        dataset = build_dataset(spec, image_size=image_size, split=config.split())
        dataset.transform = ResizeTransform(image_size)
        parts.append(dataset)
    categories = sorted({name for part in parts for name in part.classes})
    if config.cache_images and sum(part.resized_bytes() for part in parts) <= cache_budget:
        for part in parts:
            part.cache_resized()
    return TrainingData(
        dataset=SeededItems(
            ConcatDataset(parts), config.seed, AugmentSampler(image_size, p=config.augment_p) if config.augment else None
        ),
        image_counts={spec: len(part) for spec, part in zip(specs, parts)},
        categories=categories,
        manifest_entries=[dataset_entry(spec, part.samples, part.root, config.split()) for spec, part in zip(specs, parts)],
    )


UNKNOWN = -1


@dataclass
class TrainingBatch:
    """The readable items of a collated batch on the training device, ready for the detector.

    images (B', 3, S, S) float32, augmented and CLIP-normalised; masks (B', 1, S, S)
    float32 in {0, 1} (all 0 for a normal image, also in a set without mask files), or
    all -1 for an anomalous image without a pixel label (the methods skip its
    segmentation loss); labels (B',) int64 in {0, 1, -1 unknown}, an unknown label being
    taken from a real (augmented) mask when there is one; categories: (B',) category keys.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    categories: list[str]


def training_batch(batch: Batch, device: torch.device) -> TrainingBatch | None:
    """The detector's training inputs from a collated batch of uint8 images and masks
    (None when no item of it was readable): moved to ``device``, augmented there as one
    batch with the items' own choices (``batch.augment``), normalised; masks of -1 for
    the images without a pixel label, unknown labels taken from a real mask. Nothing
    waits for the device."""
    if not len(batch):
        return None
    if batch.images.dtype != torch.uint8:
        raise ValueError(f"training batches hold uint8 images (ResizeTransform), got {batch.images.dtype}")
    non_blocking = device.type == "cuda"  # the loader pins the batch on CUDA

    def moved(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=non_blocking)

    images, masks = moved(batch.images), moved(batch.masks)
    if batch.augment is not None:
        images, masks = augment_batch(images, masks, batch.augment.to(device, non_blocking=non_blocking))
    else:
        images = unit_range(images)
    has_mask, given_labels = moved(batch.has_mask), moved(batch.labels)
    # A normal image has an empty mask even in a set without mask files.
    pixel_labelled = has_mask | (given_labels == 0)
    masks = masks.float().masked_fill(~pixel_labelled[:, None, None, None], float(UNKNOWN))
    from_mask = torch.where(has_mask, (masks.flatten(1).amax(dim=1) > 0.5).long(), UNKNOWN)
    labels = torch.where(given_labels >= 0, given_labels, from_mask)
    return TrainingBatch(clip_normalize(images), masks, labels, list(batch.class_names))
