"""WMoE-CLIP: VAE-shifted learnable prompts, wavelet cross-modal attention and a semantic
MoE on a frozen CLIP (docs/specification.md (WMoE-CLIP)).

The visual tower runs frozen (no in-stream module). Per tapped layer the patch tokens go
through ``ln_post`` + CLIP's projection and L2 normalisation; WCMA refines the prompt
pair with that layer's frequency-enhanced patches; the layer's map is the softmax of
the cosines with the refined pair (temperature 0.07). The image score fuses the SA-MoE
feature's abnormal probability with the map maximum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...backbone import ClipBackbone, VisualFeatures
from ...losses import dice_loss, focal_loss, image_classification_loss, known_masks
from ...maps import cosine_scores, fuse_scores, smooth_at_reference, tokens_to_grid, upsample
from ...precision import float32_region
from ...text import PromptLayout
from .. import register_method
from ..base import AnomalyDetector, DetectorOutput, Routing
from ..moeclip.aux_losses import balance_loss
from .config import WMoEClipConfig
from .ctds import GlobalFeatureVAE, LatentSample, kl_divergence, reconstruction_loss
from .prompts import LearnablePromptPair
from .samoe import ContextAdapters, SemanticMoE
from .wcma import WaveletCrossAttention

# "<layer>/<pool>": SA-MoE routes once per image, on the context of every tap.
ROUTING_KEY = "context/samoe"


@register_method
class WMoEClipDetector(AnomalyDetector):
    name = "wmoeclip"
    config_class = WMoEClipConfig
    trainable = True

    def __init__(self, backbone: ClipBackbone, config: WMoEClipConfig):
        super().__init__(backbone, config)
        self.taps = tuple(config.taps) or backbone.default_taps()
        self.vv_start = backbone.default_vv_start() if config.vv_path else None
        text_dim, text_width = backbone.embed_dim, backbone.text_width
        self.prompts = LearnablePromptPair(text_width, config.prompt_length, config.normal_prefix, config.abnormal_prefix)
        self.vae = self.prompt_shift = None
        if config.ctds:
            self.vae = GlobalFeatureVAE(text_dim, config.latent_dim, config.decoder_hidden or text_dim)
            self.prompt_shift = nn.Linear(config.latent_dim, text_width)
        self.wcma = None
        if config.wcma:
            self.wcma = nn.ModuleList(
                WaveletCrossAttention(text_dim, config.wcma_heads, config.wcma_reduction) for _ in self.taps
            )
        self.adapters = self.moe = None
        if config.samoe:
            self.adapters = ContextAdapters(backbone.width, config.adapter_dim, len(self.taps))
            self.moe = SemanticMoE(
                config.adapter_dim * len(self.taps), text_dim, config.num_experts, config.top_k, config.expert_hidden or text_dim
            )

    def prompt_inputs(self, class_names, device: torch.device) -> PromptLayout:
        """The layout of the learnable prompt pair. The class names are not used: the learned
        tokens stand for the object."""
        return self.prompts.layout(self.backbone).to(device)

    def detect(self, images: torch.Tensor, prompts: PromptLayout, masks=None, labels=None) -> DetectorOutput:
        """images (B, 3, S, S); prompts: :meth:`prompt_inputs`; masks (B, 1, S, S) in {0, 1},
        negative = unknown; labels (B,) in {0, 1}, -1 = unknown. Returns maps (B, S, S), scores (B,), and in training the weighted loss
        terms focal, dice, bce, kl, rec, balance (those whose module is on)."""
        backbone = self.backbone
        size = images.shape[-1]
        features = backbone.forward_visual(images, taps=self.taps, vv_start=self.vv_start)
        global_feature = features.image_embedding.float()  # g, (B, d_t)
        latent = self.vae(global_feature) if self.vae is not None else None
        text = self.prompts(backbone, self.prompt_shift(latent.z) if latent is not None else None, prompts)
        text = text.float().expand(images.shape[0], -1, -1)  # (B, 2, d_t) [T_n, T_a]
        layer_probs = self._layer_probabilities(features, text, size)
        image_logits, routing = self._image_logits(features, global_feature, text)

        # Only the losses need gradients: in training the map and the score are computed
        # outside the autograd graph (same values).
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.training):
            anomaly_map, score = self._map_and_score(layer_probs, image_logits)
        routed = {} if routing is None else {ROUTING_KEY: routing}
        output = DetectorOutput(anomaly_map=anomaly_map, pred_score=score, routing=routed)
        if self.training and (masks is not None or labels is not None):
            output.losses = self._losses(layer_probs, image_logits, latent, global_feature, routing, masks, labels)
        return output

    def _layer_probabilities(self, features: VisualFeatures, text: Tensor, size: int) -> list[Tensor]:
        """Per tapped layer the (B, 2, S, S) [normal, abnormal] probabilities: softmax over the
        cosines of the projected patches with that layer's refined text pair, upsampled."""
        layer_probs = []
        for layer, block in enumerate(self.taps):
            projected = self.backbone.project_tokens(features.patch_tokens(block))
            with float32_region(projected.device):
                patches = F.normalize(projected.float(), dim=-1)  # (B, L, d_t)
            refined = self.wcma[layer](text, patches) if self.wcma is not None else text
            with float32_region(projected.device):
                logits = cosine_scores(patches, refined.float()) / self.config.temperature  # (B, L, 2)
                layer_probs.append(upsample(tokens_to_grid(logits.softmax(dim=-1)), size))
        return layer_probs

    def _image_logits(
        self, features: VisualFeatures, global_feature: Tensor, text: Tensor
    ) -> tuple[Tensor, Routing | None]:
        """(B, 2) logits of the image feature against [T_n, T_a]: f' = SA-MoE(context) + g, or g
        alone without SA-MoE; and the routing (None without SA-MoE)."""
        routing = None
        image_feature = global_feature
        if self.moe is not None:
            context = self.adapters([features.hidden[block][:, 1:] for block in self.taps])
            expert_mix, routing = self.moe(context)
            image_feature = expert_mix.float() + global_feature  # f' = f + g
        with float32_region(global_feature.device):
            return cosine_scores(image_feature.float(), text) / self.config.temperature, routing

    def _map_and_score(self, layer_probs: list[Tensor], image_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Inference map (B, S, S): mean abnormal probability over the layers, Gaussian-smoothed;
        score (B,) = (s_cls + max of the map) / 2."""
        with float32_region(image_logits.device):
            raw_map = torch.stack([probs[:, 1] for probs in layer_probs]).mean(dim=0)
            anomaly_map = smooth_at_reference(raw_map, self.config.smoothing_sigma).clamp(0, 1)
            classification = image_logits.float().softmax(dim=-1)[:, 1]
            return anomaly_map, fuse_scores(anomaly_map, classification)

    def _losses(
        self,
        layer_probs: list[Tensor],
        image_logits: Tensor,
        latent: LatentSample | None,
        global_feature: Tensor,
        routing: Routing | None,
        masks: Tensor | None,
        labels: Tensor | None,
    ) -> dict[str, Tensor]:
        """Weighted loss terms (Eq. 9-11 plus the VAE and balance terms)."""
        config = self.config
        zero = image_logits.new_zeros(())
        losses: dict[str, Tensor] = {}
        if masks is not None:
            known = known_masks(masks)
            focal = dice = zero
            if known.any():
                target = masks[known, 0].round().long()
                # The spec's loss reads the final map (the mean over the taps) once; the
                # per-tap sum weighs segmentation len(taps) times against BCE, KL and rec.
                maps = layer_probs if config.per_tap_segmentation_loss else [torch.stack(layer_probs).mean(dim=0)]
                focal = sum((focal_loss(probs[known], target) for probs in maps), zero)
                dice = sum((dice_loss(probs[known, 1], target.float()) for probs in maps), zero)
            losses["focal"] = config.focal_weight * focal
            losses["dice"] = config.dice_weight * dice
        if labels is not None:
            # Cross-entropy over the two logits = BCE of s_cls = softmax(...)[abnormal].
            losses["bce"] = config.bce_weight * image_classification_loss(image_logits, labels)
        if latent is not None:
            with float32_region(global_feature.device):
                kl = kl_divergence(latent.mu.float(), latent.log_var.float())
                reconstruction = reconstruction_loss(latent.reconstruction.float(), global_feature)
            losses["kl"] = config.kl_weight * kl
            losses["rec"] = config.rec_weight * reconstruction
        if routing is not None and config.balance_loss:
            losses["balance"] = config.balance_weight * balance_loss(routing.probabilities)
        return losses
