"""The contract every method follows: images in, a typed output out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..backbone import ClipBackbone
from ..settings import Settings


@dataclass
class DetectorOutput:
    """What a detector returns for a batch.

    anomaly_map: (B, H, W) values in [0, 1] at the input resolution.
    pred_score: (B,) image anomaly scores in [0, 1].
    losses: named scalar losses, filled only when targets are given in training.
    extras: method-specific tensors for analyses (e.g. routing decisions).
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig(Settings):
    """Base class of method configs (plain fields, JSON round trip, checked keys)."""


class AnomalyDetector(nn.Module):
    """Base class: a frozen backbone plus the method's own (possibly trainable) modules.

    Subclasses set ``name`` and ``config_class`` and implement ``forward``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    trainable: ClassVar[bool] = False

    def __init__(self, backbone: ClipBackbone, config: MethodConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(
        self,
        images: torch.Tensor,
        class_names: Sequence[str],
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> DetectorOutput:
        """images (B, 3, S, S); class_names (B,) prompt words. For training losses only:
        masks (B, 1, S, S) in {0, 1}, all -1 for an image without a pixel label (no
        segmentation loss for it); labels (B,) in {0, 1}, -1 when unknown."""
        raise NotImplementedError

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own state: every tensor outside the frozen backbone that is saved
        (trainable parameters and persistent buffers such as frozen FOFS projections)."""
        return {
            key: value
            for key, value in self.state_dict().items()
            if not key.startswith("backbone.")
        }

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
