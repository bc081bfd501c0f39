"""A throwaway method in one module and nothing else: importing it registers ``toy``.

It shows what a new method needs: a config dataclass and an AnomalyDetector subclass
with a ``detect`` method, decorated with ``@register_method``, built from the kit (tap
resolution, map smoothing at the reference size, score fusion, the shared losses). A linear map on the frozen
projected patch tokens of the last tap gives per-patch logits over {normal, anomalous}.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zsad.losses import image_classification_loss, segmentation_loss
from zsad.maps import fuse_scores, smooth_at_reference, tokens_to_grid, upsample
from zsad.methods import AnomalyDetector, DetectorOutput, MethodConfig, register_method


@dataclass
class ToyConfig(MethodConfig):
    """taps: 1-based blocks (empty = the backbone's defaults; the last one is used);
    smoothing_sigma: pixels at maps.REFERENCE_SIZE."""

    taps: tuple[int, ...] = ()
    smoothing_sigma: float = 4.0


@register_method
class ToyDetector(AnomalyDetector):
    name = "toy"
    config_class = ToyConfig
    trainable = True

    def __init__(self, backbone, config: ToyConfig):
        super().__init__(backbone, config)
        self.block = backbone.resolve_taps(config.taps)[-1]
        self.patch_head = nn.Linear(backbone.embed_dim, 2)
        self.image_head = nn.Linear(backbone.embed_dim, 2)

    def detect(self, images: torch.Tensor, prompts: None, masks=None, labels=None) -> DetectorOutput:
        """images (B, 3, S, S) -> maps (B, S, S), scores (B,); losses in training. The
        prompt words are not read (the default ``prompt_inputs`` gives None)."""
        with torch.no_grad():
            features = self.backbone.forward_visual(images, taps=(self.block,))
            tokens = self.backbone.project_tokens(features.patch_tokens(self.block))  # (B, L, d_t)
        patch_probs = upsample(tokens_to_grid(self.patch_head(tokens)), images.shape[-1]).softmax(dim=1)  # (B, 2, S, S)
        image_logits = self.image_head(tokens.mean(dim=1))  # (B, 2)
        anomaly_map = smooth_at_reference(patch_probs[:, 1], self.config.smoothing_sigma).clamp(0, 1)
        output = DetectorOutput(anomaly_map, fuse_scores(anomaly_map, F.softmax(image_logits, dim=-1)[:, 1]))
        if self.training and masks is not None and labels is not None:
            output.losses = {"seg": segmentation_loss([patch_probs], masks), "cls": image_classification_loss(image_logits, labels)}
        return output
