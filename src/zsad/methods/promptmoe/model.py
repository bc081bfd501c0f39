"""PromptMoE: visually-guided mixtures of learned prompts on a frozen CLIP (docs/specification.md (PromptMoE)).

Per tapped layer l (V-V stream from block D/2 + 1 on):

    F_x^(l)  = normalise(proj(ln_post(patch tokens)))                    (B, L, d_t)
    F_cls    = normalise(CLIP image embedding)                           (B, d_t)
    VGMoP(l) reads [F_x^(l); F_cls] and mixes expert prompts into
        T_n = [S_agg^n][class name][Q_ctx],  T_a = [S_agg^n][S_agg^a][class name][Q_ctx]
    F_T^(l)  = frozen text encoder(T_n, T_a)                             (B, 2, d_t)
    M        = mean_l softmax(Up(F_x^(l) F_T^(l)T) / tau)_abnormal        (Eq. 6)
    s        = (max M + softmax(F_cls F_T^(last)T / tau')_abnormal) / 2   (Eq. 7)

All prompts of a batch (modules x {normal, abnormal} x images) go through the text
encoder in one call. Training losses: BCE(s, c), focal and Dice on M, alpha L_balance,
beta L_decouple (Eq. 8).
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...backbone import ClipBackbone
from ...losses import dice_loss, focal_loss, known_masks
from ...maps import fuse_scores, smooth_at_reference, tokens_to_grid, upsample
from ...precision import float32_region
from ...text import (
    UNKNOWN_CLASS_NAME,
    LearnedPrompts,
    PromptLayout,
    build_learned_prompts,
    encode_learned_prompts,
    fill_prompt_layout,
    prompt_layout,
)
from .. import register_method
from ..base import AnomalyDetector, DetectorOutput
from .aux_losses import balance_loss, decoupling_loss
from .config import PromptMoEConfig
from .vgmop import MixedStates, PoolRouting, StaticPools, VGMoP


class RoutedPromptLayouts(NamedTuple):
    """Each image's routed prompts without their learned tokens (rows = images):
    normal ``[S_agg^n][class name][Q_ctx]``, abnormal ``[S_agg^n][S_agg^a][class name][Q_ctx]``."""

    normal: PromptLayout
    abnormal: PromptLayout


@register_method
class PromptMoEDetector(AnomalyDetector):
    name = "promptmoe"
    config_class = PromptMoEConfig
    trainable = True
    # Every prompt of a batch (prompt modules x {normal, abnormal} x images, or x experts
    # x class names for static prompts) is encoded in this many text-encoder calls.
    text_encoder_calls_per_batch: ClassVar[int] = 1

    def __init__(self, backbone: ClipBackbone, config: PromptMoEConfig):
        super().__init__(backbone, config)
        self.taps = backbone.resolve_taps(config.taps)
        self.vv_start = backbone.resolve_vv_start(config.vv_start) if config.vv_path else None
        # The blocks whose features feed a prompt module: every tap, or the last one.
        self.prompt_blocks = self.taps if config.per_layer_prompts else self.taps[-1:]
        token_dim, visual_dim = backbone.text_width, backbone.embed_dim
        if config.composition == "routed":
            modules = [
                VGMoP(
                    visual_dim, token_dim, config.num_experts, config.top_k, config.num_queries,
                    config.attention_heads, config.router_hidden, config.normal_length, config.abnormal_length,
                    config.init_std, config.shared_attention, config.shared_pool,
                )
                for _ in self.prompt_blocks
            ]
        else:
            modules = [
                StaticPools(token_dim, config.num_experts, config.normal_length, config.abnormal_length, config.init_std)
                for _ in self.prompt_blocks
            ]
        self.prompt_modules = nn.ModuleList(modules)
        self.context = (
            nn.Parameter(torch.randn(config.context_length, token_dim) * config.init_std)
            if config.context_length
            else None
        )

    # ------------------------------------------------------------------ visual side
    @torch.no_grad()
    def visual_features(self, images: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """images (B, 3, S, S) -> ({tap: (B, L, d_t) normalised patch features}, (B, d_t)
        normalised global feature). The backbone is frozen: no autograd here."""
        backbone = self.backbone
        features = backbone.forward_visual(images, taps=self.taps, vv_start=self.vv_start)
        patches = {
            block: F.normalize(backbone.project_tokens(features.patch_tokens(block)), dim=-1) for block in self.taps
        }
        return patches, F.normalize(features.image_embedding, dim=-1)

    # ------------------------------------------------------------------ text side
    def _suffix(self, rows: int) -> torch.Tensor | None:
        """(rows, M_q, D) shared context, or None without context tokens."""
        return None if self.context is None else self.context.unsqueeze(0).expand(rows, -1, -1)

    def routed_layouts(self, words: Sequence[str], device: torch.device) -> RoutedPromptLayouts:
        """The layouts of each image's two routed prompts (rows = images), built on the host."""
        config, backbone = self.config, self.backbone
        return RoutedPromptLayouts(
            normal=prompt_layout(backbone, words, config.normal_length, config.context_length).to(device),
            abnormal=prompt_layout(
                backbone, words, config.normal_length + config.abnormal_length, config.context_length
            ).to(device),
        )

    def routed_prompts(self, states: Sequence[MixedStates], layouts: RoutedPromptLayouts) -> LearnedPrompts:
        """Rows: [normal | abnormal] x module x image."""
        modules = len(states)
        normal = torch.cat([state.normal for state in states])
        abnormal = torch.cat([torch.cat([state.normal, state.abnormal], dim=1) for state in states])
        rows = normal.shape[0]
        return LearnedPrompts.concat([
            fill_prompt_layout(self.backbone, layouts.normal.repeat(modules), normal, self._suffix(rows)),
            fill_prompt_layout(self.backbone, layouts.abnormal.repeat(modules), abnormal, self._suffix(rows)),
        ])

    def static_prompts(self, names: list[str]) -> LearnedPrompts:
        """Rows: [normal | abnormal] x module x expert x name; abnormal prompt j pairs
        normal expert j with abnormal expert j."""
        normal, abnormal = [], []
        for module in self.prompt_modules:
            normal_experts = module.pools["normal"].experts  # (E, M_n, D)
            paired = torch.cat([normal_experts, module.pools["abnormal"].experts], dim=1)  # (E, M_n + M_a, D)
            normal.append(normal_experts.repeat_interleave(len(names), dim=0))
            abnormal.append(paired.repeat_interleave(len(names), dim=0))
        all_names = names * (len(self.prompt_modules) * self.config.num_experts)
        normal_prompts, abnormal_prompts = torch.cat(normal), torch.cat(abnormal)
        return LearnedPrompts.concat([
            build_learned_prompts(self.backbone, all_names, normal_prompts, self._suffix(normal_prompts.shape[0])),
            build_learned_prompts(self.backbone, all_names, abnormal_prompts, self._suffix(abnormal_prompts.shape[0])),
        ])

    def static_text(self, words: Sequence[str]) -> torch.Tensor:
        """(P, B, 2, d_t) normalised [F_T normal, F_T abnormal] per prompt module and image:
        the expert prompts' features averaged, one text-encoder call for the batch's
        distinct words."""
        names = list(dict.fromkeys(words))
        encoded = encode_learned_prompts(self.backbone, self.static_prompts(names))
        modules, experts = len(self.prompt_modules), self.config.num_experts
        per_expert = encoded.reshape(2, modules, experts, len(names), -1)
        ensemble = F.normalize(per_expert.mean(dim=2), dim=-1).permute(1, 2, 0, 3)  # (modules, names, 2, d_t)
        index = torch.tensor([names.index(word) for word in words], device=ensemble.device)
        return ensemble.index_select(1, index)

    def word_inputs(self, words: Sequence[str], device: torch.device) -> RoutedPromptLayouts | torch.Tensor:
        """The words as given, made tensors: routed prompts' layouts, or the static prompts'
        text features (they do not depend on the image)."""
        if self.config.composition == "routed":
            return self.routed_layouts(words, device)
        return self.static_text(words).to(device)

    def prompt_inputs(self, class_names: Sequence[str], device: torch.device) -> RoutedPromptLayouts | torch.Tensor:
        """:meth:`word_inputs` of the class names (all 'object' without ``use_class_names``)."""
        words = list(class_names) if self.config.use_class_names else [UNKNOWN_CLASS_NAME] * len(class_names)
        return self.word_inputs(words, device)

    def prompt_text(
        self, patches: dict[int, torch.Tensor], global_feature: torch.Tensor, prompts: RoutedPromptLayouts | torch.Tensor
    ) -> tuple[list[torch.Tensor], dict[str, PoolRouting]]:
        """Encode every prompt of the batch in one text-encoder call (static prompts: already
        encoded by :meth:`word_inputs`).

        Returns ([(B, 2, d_t) normalised [F_T normal, F_T abnormal] per prompt module],
        routing {"<block>/<pool>": PoolRouting} (empty for static prompts)).
        """
        if self.config.composition != "routed":
            return list(prompts), {}
        batch, modules = global_feature.shape[0], len(self.prompt_modules)
        contexts = [torch.cat([patches[block], global_feature.unsqueeze(1)], dim=1) for block in self.prompt_blocks]
        states = [module(context) for module, context in zip(self.prompt_modules, contexts)]
        encoded = encode_learned_prompts(self.backbone, self.routed_prompts(states, prompts))
        text = encoded.reshape(2, modules, batch, -1).permute(1, 2, 0, 3)  # (modules, B, 2, d_t)
        routing = {
            f"{block}/{pool}": decision
            for block, state in zip(self.prompt_blocks, states)
            for pool, decision in state.routing.items()
        }
        return list(text), routing

    def text_features(
        self, patches: dict[int, torch.Tensor], global_feature: torch.Tensor, words: list[str]
    ) -> tuple[list[torch.Tensor], dict[str, PoolRouting]]:
        """:meth:`prompt_text` for the prompt words ``words`` (B,), used as given."""
        return self.prompt_text(patches, global_feature, self.word_inputs(words, global_feature.device))

    # ------------------------------------------------------------------ forward
    def anomaly_probabilities(
        self, patches: dict[int, torch.Tensor], global_feature: torch.Tensor, layer_text: list[torch.Tensor], size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 6 map before smoothing, (B, S, S), and the global abnormal probability of
        Eq. 7, (B,). layer_text: per tap (B, 2, d_t). Runs in float32, also under autocast
        (logits are cosines / 0.07)."""
        config = self.config
        with float32_region(global_feature.device):
            layer_maps = []
            for block, pair in zip(self.taps, layer_text):
                similarity = torch.einsum("bld,bcd->blc", patches[block].float(), pair.float())  # (B, L, 2)
                margin = tokens_to_grid(similarity[..., 1:] - similarity[..., :1])  # (B, 1, h, w)
                # softmax over two channels = sigmoid of their difference; Up is linear.
                layer_maps.append(torch.sigmoid(upsample(margin, size) / config.map_temperature))
            raw_map = torch.stack(layer_maps).mean(dim=0).squeeze(1)
            global_logits = torch.einsum("bd,bcd->bc", global_feature.float(), layer_text[-1].float())
            global_prob = (global_logits / config.score_temperature).softmax(dim=-1)[:, 1]
        return raw_map, global_prob

    def detect(
        self,
        images: torch.Tensor,
        prompts: RoutedPromptLayouts | torch.Tensor,
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> DetectorOutput:
        """images (B, 3, S, S); prompts: :meth:`prompt_inputs`; masks (B, 1, S, S) in {0, 1},
        negative = unknown (no segmentation loss for that image); labels (B,) in {0, 1},
        -1 = unknown. Returns maps (B, S, S) and scores (B,) in [0, 1]; routing per
        "<block>/<pool>" (one decision per image: L = 1, grid (1, 1)); in training the losses
        bce, focal, dice, balance, decouple (weighted) and the unweighted auxiliary losses
        as monitors."""
        config, size = self.config, images.shape[-1]
        patches, global_feature = self.visual_features(images)
        text, routing = self.prompt_text(patches, global_feature, prompts)
        layer_text = text if config.per_layer_prompts else text * len(self.taps)

        raw_map, global_prob = self.anomaly_probabilities(patches, global_feature, layer_text, size)
        # The outputs need no graph: training differentiates the losses, which use raw_map.
        anomaly_map = smooth_at_reference(raw_map.detach(), config.smoothing_sigma).clamp(0, 1)
        output = DetectorOutput(
            anomaly_map=anomaly_map,
            pred_score=fuse_scores(anomaly_map, global_prob.detach()),
            routing={key: decision.as_routing() for key, decision in routing.items()},
        )
        if self.training and (masks is not None or labels is not None):
            train_score = fuse_scores(raw_map, global_prob)
            output.losses, output.monitors = self._losses(raw_map, train_score, routing, masks, labels)
        return output

    # ------------------------------------------------------------------ analyses
    def expert_prompts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Block (of the tap that feeds the prompt module) -> ``normal`` (E, M_n, D) and
        ``abnormal`` (E, M_a, D) expert prompts, detached. With ``shared_pool`` the one
        pool both routers mix is ``shared`` (E, max(M_n, M_a), D)."""
        prompts: dict[str, dict[str, torch.Tensor]] = {}
        for block, module in zip(self.prompt_blocks, self.prompt_modules):
            pools = {name: pool.experts.detach() for name, pool in module.pools.items() if pool.experts is not None}
            if self.config.shared_pool:
                pools = {"shared": pools["normal"]}
            prompts[str(block)] = pools
        return prompts

    # ------------------------------------------------------------------ losses
    def _auxiliary(self, routing: dict[str, PoolRouting], zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unweighted L_balance and L_decouple summed over prompt modules and pools."""
        balance = sum((balance_loss(decision.probabilities) for decision in routing.values()), zero)
        # A shared pool's experts count once (the abnormal branch only routes into them).
        pools = [pool for module in self.prompt_modules for pool in module.pools.values() if pool.experts is not None]
        decouple = sum((decoupling_loss(pool.mean_directions()) for pool in pools), zero)
        return balance, decouple

    def _losses(self, raw_map, score, routing, masks, labels) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Eq. 8 terms (weighted) and the unweighted auxiliary losses (monitors)."""
        config = self.config
        zero = raw_map.new_zeros(())
        losses: dict[str, torch.Tensor] = {}
        if labels is not None:
            known = labels >= 0
            losses["bce"] = (
                F.binary_cross_entropy(score[known].float().clamp(1e-6, 1 - 1e-6), labels[known].float())
                if known.any()
                else zero
            )
        if masks is not None:
            known = known_masks(masks)
            losses["focal"], losses["dice"] = zero, zero
            if known.any():
                target = masks[known, 0].round().long()
                anomalous = raw_map[known]
                probs = torch.stack([1 - anomalous, anomalous], dim=1)  # (B', 2, S, S)
                losses["focal"] = focal_loss(probs, target, gamma=config.focal_gamma)
                losses["dice"] = dice_loss(anomalous, target.float())
        balance, decouple = self._auxiliary(routing, zero)
        if config.balance_weight > 0 and routing:
            losses["balance"] = config.balance_weight * balance
        if config.decouple_weight > 0:
            losses["decouple"] = config.decouple_weight * decouple
        monitors = {"decouple_unweighted": decouple.detach()}
        if routing:
            monitors["balance_unweighted"] = balance.detach()
        return losses, monitors
