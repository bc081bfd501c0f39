"""MoECLIP: LoRA mixture-of-experts inside a frozen CLIP ViT (docs/specification.md (MoECLIP)).

Per tapped block a :class:`MoeAdapter` replaces the hidden state in the residual
stream. The adapted patch tokens of every tapped block are aggregated at several
scales (PAA), passed through ``ln_post`` and a per-block projection, and compared with
the frozen prompt-ensemble text features: 4 blocks x 3 scales = 12 segmentation maps.
A depth-wise adapter on the last block's tokens gives the image-level feature.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...backbone import ClipBackbone
from ...losses import image_classification_loss, segmentation_loss
from ...maps import cosine_scores, fuse_scores, gaussian_blur_window, smooth_at_reference, upsample
from ...settings import INDUSTRIAL, MEDICAL
from ...text import TextFeatureBank
from .. import register_method
from ..base import AnomalyDetector, DetectorOutput, Routing
from .aux_losses import balance_loss, etf_loss
from .config import MoEClipConfig
from .heads import DepthwiseAdapter, LayerProjections, anomalous_probabilities, anomaly_logits, project_patch_averages
from .moe import MoeAdapter, MoeOutput

# The released code's blur of the logit-gap grid (forward_utils.calculate_similarity_map):
# domain -> (window side, sigma), both in patch-grid cells (sigma 1 cell ~ 14 px at 518).
GRID_SMOOTHING = {INDUSTRIAL: (7, 1.0), MEDICAL: (9, 1.5)}


class TextAdapter(nn.Module):
    """Optional trainable map on the text features: bias-free Linear (identity init) +
    LeakyReLU, then re-normalisation. (..., d_t) -> (..., d_t)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.linear.weight)
        self.activation = nn.LeakyReLU()

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.activation(self.linear(text)), dim=-1)


def patch_routing(output: MoeOutput, grid: tuple[int, int]) -> Routing:
    """The routing of the patch tokens (the CLS token, index 0, dropped) of one MoE layer."""
    return Routing(
        probabilities=output.router_probs[:, 1:],
        topk_index=output.topk_index[:, 1:],
        topk_weight=output.topk_weight[:, 1:],
        expert_outputs=None if output.expert_outputs is None else output.expert_outputs[:, 1:],
        grid=grid,
    )


@register_method
class MoEClipDetector(AnomalyDetector):
    name = "moeclip"
    config_class = MoEClipConfig
    trainable = True

    def __init__(self, backbone: ClipBackbone, config: MoEClipConfig):
        super().__init__(backbone, config)
        self.blocks = backbone.resolve_taps(config.blocks)
        width, text_dim = backbone.width, backbone.embed_dim
        self.moe_layers = nn.ModuleList(
            MoeAdapter(
                width,
                num_experts=config.num_experts,
                top_k=config.top_k,
                rank=config.rank,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                lambda_moe=config.lambda_moe,
                fofs=config.fofs,
                full_rank=config.full_rank_experts,
                seed=config.fofs_seed + index,
                router_hidden=config.router_hidden,
                noise_std_ratio=config.router_noise,
                dispatch=config.dispatch,
                norm_match_gradient=config.norm_match_gradient,
            )
            for index in range(len(self.blocks))
        )
        self.projections = LayerProjections(width, text_dim, len(self.blocks))
        self.image_adapter = DepthwiseAdapter(width, text_dim) if config.depthwise_adapter else None
        self.text_adapter = TextAdapter(text_dim) if config.text_adapter else None
        self.text_bank = TextFeatureBank()

    def feature_taps(self) -> tuple[int, ...]:
        return self.blocks

    def text_features(self, class_names: Sequence[str], device: torch.device) -> torch.Tensor:
        """(B,) prompt words -> (B, 2, d_t) normalised [T_N, T_A] (frozen, cached)."""
        text = self.text_bank.features(self.backbone, class_names).to(device)
        return self.text_adapter(text) if self.text_adapter is not None else text

    def prompt_inputs(self, class_names: Sequence[str], device: torch.device) -> torch.Tensor:
        """(B, 2, d_t) text features: see :meth:`text_features`."""
        return self.text_features(class_names, device)

    def detect(self, images: torch.Tensor, text: torch.Tensor, masks=None, labels=None) -> DetectorOutput:
        """images (B, 3, S, S); text (B, 2, d_t) or (2, d_t), as :meth:`text_features`
        returns them; masks (B, 1, S, S) in {0, 1}, negative = unknown (no segmentation loss
        for that image); labels (B,) in {0, 1}, -1 = unknown. Returns maps (B, S, S), scores
        (B,), and in training the weighted loss terms seg, cls, etf, balance. In training
        mode the map and the score carry no gradient (only the losses do). No host
        synchronisation in inference (the whole call can be captured in a CUDA graph for
        fixed shapes)."""
        config, backbone = self.config, self.backbone
        size = images.shape[-1]
        features = backbone.forward_visual(
            images,
            taps=self.blocks,
            stream_modules=dict(zip(self.blocks, self.moe_layers)),
            checkpoint_frozen_blocks=config.activation_checkpointing and self.training,
        )
        ln_post = backbone.clip.visual.ln_post
        logit_gaps = []  # 12 maps of (B, h, h) anomalous minus normal logits at the patch grid
        for layer, block in enumerate(self.blocks):
            tokens = features.hidden[block][:, 1:]
            projection = self.projections.projections[layer]
            for projected in project_patch_averages(tokens, config.paa_scales, ln_post, projection):
                logits = anomaly_logits(projected, text, config.logit_scale)
                logit_gaps.append(logits[:, 1] - logits[:, 0])
        logit_gaps = torch.stack(logit_gaps, dim=1)  # (B, 12, h, h)
        # the 12 upsampled maps: what the training loss reads, and the pixel-smoothed map
        needs_maps = self.training or config.map_smoothing == "pixel"
        anomalous = anomalous_probabilities(logit_gaps, size) if needs_maps else None  # (B, 12, S, S)
        last_tokens = ln_post(features.hidden[self.blocks[-1]][:, 1:])
        if self.image_adapter is not None:
            image_feature = self.image_adapter(last_tokens)
        else:
            image_feature = self.projections.projections[-1](last_tokens).mean(dim=1)
        image_logits = cosine_scores(image_feature, text) / config.score_temperature  # (B, 2)

        # Only the losses need gradients: in training the map and the score are computed
        # outside the autograd graph (same values, detached), so that the graph does not
        # hold the 12-map mean, the smoothing and the score.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.training):
            anomaly_map, score = self._map_and_score(logit_gaps, anomalous, image_logits, size)

        moe_outputs = [features.stream_outputs[block] for block in self.blocks]
        routing = {str(block): patch_routing(moe, features.grid) for block, moe in zip(self.blocks, moe_outputs)}
        output = DetectorOutput(anomaly_map=anomaly_map, pred_score=score, routing=routing)
        if self.training and (masks is not None or labels is not None):
            output.losses = self._losses(logit_gaps, anomalous, image_logits, moe_outputs, masks, labels)
        return output

    def _map_and_score(self, logit_gaps, anomalous, image_logits, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference map (B, S, S) in [0, 1] (see ``MoEClipConfig.map_smoothing``) from the
        (B, 12, h, h) logit gaps or the (B, 12, S, S) anomalous probabilities; image score
        (B,) by ``score_mode``, or ``medical_score_mode`` in the medical domain."""
        config = self.config
        if config.map_smoothing == "grid":
            # Blur and upsampling are linear: blurring the mean gap once equals the released
            # code's sum of 12 blurred (gap + 1) / 2 maps up to an affine map, and the
            # sigmoid keeps its order (every pixel metric is the released code's).
            window, sigma = GRID_SMOOTHING[self.domain]
            # A grid narrower than the window (tiny inputs only) reflects at most side - 1 cells.
            window = min(window, 2 * min(logit_gaps.shape[-2:]) - 1)
            blurred = gaussian_blur_window(logit_gaps.float().mean(dim=1), window, sigma)
            anomaly_map = upsample(blurred.unsqueeze(1), size, align_corners=True).squeeze(1).sigmoid()
        else:
            anomaly_map = smooth_at_reference(anomalous.mean(dim=1), config.smoothing_sigma).clamp(0, 1)
        detection = image_logits.softmax(dim=-1)[:, 1]
        mode = config.medical_score_mode if self.domain == MEDICAL else config.score_mode
        if mode == "det":
            return anomaly_map, detection
        if mode == "map":
            return anomaly_map, anomaly_map.flatten(1).amax(dim=1)
        return anomaly_map, fuse_scores(anomaly_map, detection)

    @contextlib.contextmanager
    def keeping_expert_outputs(self) -> Iterator[None]:
        """Run every MoE layer densely (all experts on every token, so their outputs are
        returned); the previous dispatch is restored afterwards."""
        previous = [layer.dispatch for layer in self.moe_layers]
        try:
            for layer in self.moe_layers:
                layer.dispatch = "dense"
            yield
        finally:
            for layer, dispatch in zip(self.moe_layers, previous):
                layer.dispatch = dispatch

    def _losses(self, logit_gaps, anomalous, image_logits, outputs, masks, labels) -> dict[str, torch.Tensor]:
        config = self.config
        zero = image_logits.new_zeros(())
        losses: dict[str, torch.Tensor] = {}
        if masks is not None:
            # (normal, anomalous) = (sigmoid(-upsample(gap)), sigmoid(upsample(gap))): the
            # two-class softmax of the upsampled logits, without the cancellation of 1 - p
            normal = anomalous_probabilities(-logit_gaps, anomalous.shape[-2:])
            losses["seg"] = segmentation_loss(torch.stack((normal, anomalous), dim=2), masks, config.two_term_dice)
        if labels is not None:
            losses["cls"] = image_classification_loss(image_logits, labels)
        if config.etf_loss:
            losses["etf"] = config.etf_weight * sum((etf_loss(o.expert_outputs) for o in outputs), zero)
        if config.balance_loss:
            losses["balance"] = config.balance_weight * sum((balance_loss(o.router_probs) for o in outputs), zero)
        return losses
