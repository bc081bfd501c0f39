"""Training-free zero-shot baseline (WinCLIP-style, on the V-V stream).

For every tapped block: patch tokens of the V-V stream -> ``ln_post`` + CLIP's visual
projection -> cosine with the prompt-ensemble text pair -> softmax with CLIP's logit
scale. The abnormal probabilities are averaged over the tapped blocks, upsampled to the
input size and smoothed. Image score = mean of the map's maximum and the abnormal
probability of CLIP's global image embedding against the same text pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..backbone import ClipBackbone
from ..maps import cosine_scores, fuse_scores, smooth_at_reference, tokens_to_grid, upsample
from ..text import TextFeatureBank
from . import register_method
from .base import AnomalyDetector, DetectorOutput, MethodConfig


@dataclass
class ZeroShotConfig(MethodConfig):
    """taps: 1-based blocks (empty = D/4, D/2, 3D/4, D); vv_path: use the V-V stream;
    vv_start: its first block (None = D/2 + 1); smoothing_sigma: in pixels at
    maps.REFERENCE_SIZE, scaled with the input size."""

    taps: tuple[int, ...] = ()
    vv_path: bool = True
    vv_start: int | None = None
    smoothing_sigma: float = 4.0


@register_method
class ZeroShotDetector(AnomalyDetector):
    name = "zeroshot"
    config_class = ZeroShotConfig

    def __init__(self, backbone: ClipBackbone, config: ZeroShotConfig):
        super().__init__(backbone, config)
        self.taps = backbone.resolve_taps(config.taps)
        self.vv_start = backbone.resolve_vv_start(config.vv_start) if config.vv_path else None
        self.text_bank = TextFeatureBank()

    def feature_taps(self) -> tuple[int, ...]:
        return self.taps

    def prompt_inputs(self, class_names: Sequence[str], device: torch.device) -> torch.Tensor:
        """(B,) prompt words -> (B, 2, d_t) normalised [normal, anomalous] prompt-ensemble
        text features (cached)."""
        return self.text_bank.features(self.backbone, class_names).to(device)

    def detect(self, images: torch.Tensor, text: torch.Tensor, masks=None, labels=None) -> DetectorOutput:
        """images (B, 3, S, S), text (B, 2, d_t) -> maps (B, S, S) and scores (B,), both in [0, 1]."""
        backbone = self.backbone
        scale = backbone.clip.logit_scale.exp().clamp(max=100.0)  # () tensor: no host sync
        with torch.no_grad():
            features = backbone.forward_visual(images, taps=self.taps, vv_start=self.vv_start)
            layer_probs = []
            for block in self.taps:
                projected = backbone.project_tokens(features.patch_tokens(block))
                probs = (scale * cosine_scores(projected, text)).softmax(dim=-1)[..., 1:]  # (B, L, 1)
                layer_probs.append(tokens_to_grid(probs))
            patch_map = torch.stack(layer_probs).mean(dim=0)  # (B, 1, h, w)
            size = images.shape[-1]
            anomaly_map = upsample(patch_map, size).squeeze(1)
            anomaly_map = smooth_at_reference(anomaly_map, self.config.smoothing_sigma).clamp(0, 1)
            global_prob = (scale * cosine_scores(features.image_embedding, text)).softmax(-1)[:, 1]
            score = fuse_scores(anomaly_map, global_prob)
        return DetectorOutput(anomaly_map=anomaly_map, pred_score=score)
