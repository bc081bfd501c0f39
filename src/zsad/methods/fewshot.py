"""Few-shot mode for any method: a patch-feature memory bank fused with the zero-shot map.

Per tapped block (the method's :meth:`~zsad.methods.base.AnomalyDetector.feature_taps`),
each test patch gets its distance to the nearest reference patch of the same block,
``(1 - cos) / 2``; the distances are averaged over the blocks, upsampled to the input
size and smoothed like the methods' maps. With fusion weight ``w``::

    map   = (1 - w) * zero_shot_map   + w * memory_map
    score = (1 - w) * zero_shot_score + w * max(memory_map)

``w = 0`` reproduces the zero-shot output bit for bit. References are grouped by the
prompt words of their category; a bank stored under ``None`` serves every category.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError
from ..maps import gaussian_smooth, tokens_to_grid, upsample
from ..memory_bank import DEFAULT_MAX_BLOCK_ELEMENTS, nearest_distance
from .base import AnomalyDetector, DetectorOutput, refuse_set_method

ANY_CATEGORY = None


@dataclass(frozen=True)
class FewShotSettings:
    """weight: fusion weight of the memory-bank part in [0, 1]; smoothing_sigma: in pixels
    at 518 px (scaled with the input size); max_block_elements: cap on one similarity block."""

    weight: float = 0.5
    smoothing_sigma: float = 4.0
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise InvalidInputError(f"the few-shot fusion weight must lie in [0, 1], got {self.weight}")


class FewShotDetector(nn.Module):
    """Wraps a detector; ``forward`` has the detector's signature and output type."""

    def __init__(self, detector: AnomalyDetector, settings: FewShotSettings | None = None):
        super().__init__()
        refuse_set_method(detector, "few-shot fusion (--reference / --shots)",
                          "it needs no references: `zsad predict FOLDER --method musc --reference DIR` adds normal images to the set")
        self.detector = detector
        self.settings = settings or FewShotSettings()
        self.banks: dict[str | None, dict[int, torch.Tensor]] = {}  # category -> block -> (N, d)

    @property
    def backbone(self):
        return self.detector.backbone

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def config(self):
        return self.detector.config

    @property
    def domain(self) -> str:
        return self.detector.domain

    def scoring_domain(self, domain: str | None):
        """The wrapped detector scores ``domain`` within the context (see AnomalyDetector)."""
        return self.detector.scoring_domain(domain)

    def use_domain(self, domain: str) -> None:
        self.detector.use_domain(domain)

    def provenance(self) -> dict:
        """The wrapped detector's provenance."""
        return self.detector.provenance()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped detector's own state (the memory bank is data, not weights)."""
        return self.detector.trainable_state_dict()

    def reference_count(self, category: str | None = ANY_CATEGORY) -> int:
        """Number of reference patches per block stored for ``category``."""
        bank = self.banks.get(category)
        return 0 if bank is None else next(iter(bank.values())).shape[0]

    @torch.no_grad()
    def add_references(self, images: torch.Tensor, category: str | None = ANY_CATEGORY) -> None:
        """Add normal images (K, 3, S, S), preprocessed like test images, to the bank of
        ``category`` (prompt words, or None for every category)."""
        features = self.detector.tapped_patch_features(images)
        bank = self.banks.setdefault(category, {})
        for block, tokens in features.items():
            flat = tokens.reshape(-1, tokens.shape[-1]).float()
            bank[block] = flat if block not in bank else torch.cat([bank[block], flat])

    def _bank_for(self, category: str) -> dict[int, torch.Tensor]:
        if category in self.banks:
            return self.banks[category]
        if ANY_CATEGORY in self.banks:
            return self.banks[ANY_CATEGORY]
        known = ", ".join(repr(key) for key in self.banks) or "none"
        raise InvalidInputError(f"no reference images for category {category!r} (references exist for: {known})")

    @torch.no_grad()
    def memory_map(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """images (B, 3, S, S), class_names (B,) -> (B, S, S) memory-bank map in [0, 1]."""
        features = self.detector.tapped_patch_features(images)
        batch, size = images.shape[0], images.shape[-1]
        patch_maps = []
        for row in range(batch):
            bank = self._bank_for(class_names[row])
            layers = [
                nearest_distance(features[block][row], bank[block], self.settings.max_block_elements)
                for block in features
            ]
            patch_maps.append(torch.stack(layers).mean(dim=0))  # (L,)
        grid = tokens_to_grid(torch.stack(patch_maps)[..., None])  # (B, 1, h, w)
        anomaly_map = upsample(grid, size).squeeze(1)
        return gaussian_smooth(anomaly_map, self.settings.smoothing_sigma * size / 518).clamp(0, 1)

    def forward(
        self,
        images: torch.Tensor,
        class_names: Sequence[str],
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> DetectorOutput:
        """Same contract and output type as the wrapped detector (its routing passes through)."""
        if not self.banks:
            raise ValueError("few-shot mode needs reference images: call add_references first")
        output = self.detector(images, class_names, masks, labels)
        memory = self.memory_map(images, class_names).to(output.anomaly_map.dtype)
        weight = self.settings.weight
        fused_map = (1.0 - weight) * output.anomaly_map + weight * memory
        memory_score = memory.flatten(1).amax(dim=1).to(output.pred_score.dtype)
        fused_score = (1.0 - weight) * output.pred_score + weight * memory_score
        return DetectorOutput(anomaly_map=fused_map, pred_score=fused_score, losses=output.losses, routing=output.routing)
