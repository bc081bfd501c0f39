"""MoECLIP settings: the paper's recipe by default, every ablation one field."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInputError
from ..base import MethodConfig
from .moe import DISPATCHES, NORM_MATCH_GRADIENTS

SCORE_MODES = ("fused", "det", "map")
MAP_SMOOTHINGS = ("grid", "pixel")


@dataclass
class MoEClipConfig(MethodConfig):
    """Fields (docs/specification.md (MoECLIP)):

    blocks: 1-based blocks that get a MoE module and feed the maps (empty = D/4, D/2,
        3D/4, D, i.e. 6/12/18/24 on ViT-L; layer-placement ablation).
    num_experts, top_k: K and k of the router (K = k = 1 is the single-expert row).
    rank, lora_alpha, lora_dropout: LoRA experts (r = 8, alpha = 16, dropout 0.05).
    lambda_moe: residual weight of the norm-matched MoE output (0.1).
    norm_match_gradient: backward of the norm matching (Eq. 4). "bounded" (default) caps
        its gain at 10 where the MoE update is tiny next to the token (at init B = 0), so
        that B's first gradient does not stall Adam; "paper" is the exact gradient (B then
        barely moves for ~10^4 steps). The forward pass is the same in both.
    fofs: frozen orthogonal feature-separation projections (False = "w/o FOFS").
    full_rank_experts: d x d experts instead of LoRA (ablation; needs fofs False).
    router_hidden: width of a router MLP (ablation); None = one bias-free Linear.
    router_noise: Tab. 11 probe, logit noise std as a fraction of the logit std.
    etf_loss, balance_loss: the auxiliary losses (False only for the ablations);
    etf_weight, balance_weight: their weights (0.01 each).
    two_term_dice: the segmentation loss's Dice has two terms, the normal channel against
        1 - mask and the anomalous channel against the mask, as the authors' released code
        trains (False = the anomalous term only, supp. Eq. B.4 read alone).
    paa_scales: Patch Average Aggregation windows ((1,) = "w/o PAA").
    depthwise_adapter: False = V_image is the mean of the last layer's projected tokens.
    text_adapter: trainable bias-free Linear + LeakyReLU on the text features (on: the
        paper's 433.6 M parameters count it, and the authors' released code trains it;
        False = the frozen prompt-ensemble features, 0.59 M fewer on ViT-L).
    score_mode: image score on industrial images: fused (mean of det and map max), det,
        or map. medical_score_mode: the same on medical images (map: the map's maximum
        alone, as the released code scores medical sets).
    score_temperature: temperature of the image-level softmax / cross-entropy (1).
    map_smoothing: ``grid`` (the released code, which produced the paper's numbers): the
        mean logit gap of the 12 maps is blurred on the patch grid, before the bilinear
        upsampling (align_corners, as released), by a 7 x 7 Gaussian, sigma 1 cell, on
        industrial images and a 9 x 9, sigma 1.5, on medical ones (``GRID_SMOOTHING``); the
        map is the sigmoid of the result. ``pixel``: the mean of the 12 probability maps,
        Gaussian-smoothed with ``smoothing_sigma`` (the spec's earlier choice).
    smoothing_sigma: for ``pixel``: px at maps.REFERENCE_SIZE (scaled with size).
    logit_scale: multiplier of the patch-text cosines (CLIP's 100).
    dispatch: expert evaluation at inference: auto (stacked on GPUs and under torch.compile,
        sparse on the CPU otherwise),
        sparse (only the k chosen experts run), stacked (all experts as two matmuls) or
        dense (every expert's output kept, for the analyses).
    activation_checkpointing: recompute frozen blocks after the first MoE in backward.
    fofs_seed: seed of the frozen FOFS projections (layer i uses fofs_seed + i).
    """

    runtime_fields = ("activation_checkpointing",)

    blocks: tuple[int, ...] = ()
    num_experts: int = 4
    top_k: int = 2
    rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lambda_moe: float = 0.1
    norm_match_gradient: str = "bounded"
    fofs: bool = True
    full_rank_experts: bool = False
    router_hidden: int | None = None
    router_noise: float | None = None
    etf_loss: bool = True
    etf_weight: float = 0.01
    balance_loss: bool = True
    balance_weight: float = 0.01
    two_term_dice: bool = True
    paa_scales: tuple[int, ...] = (1, 3, 5)
    depthwise_adapter: bool = True
    text_adapter: bool = True
    score_mode: str = "fused"
    medical_score_mode: str = "map"
    score_temperature: float = 1.0
    map_smoothing: str = "grid"
    smoothing_sigma: float = 4.0
    logit_scale: float = 100.0
    dispatch: str = "auto"
    activation_checkpointing: bool = False
    fofs_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("score_mode", "medical_score_mode"):
            if getattr(self, name) not in SCORE_MODES:
                raise InvalidInputError(f"{name} must be one of {SCORE_MODES}, got {getattr(self, name)!r}")
        if self.map_smoothing not in MAP_SMOOTHINGS:
            raise InvalidInputError(f"map_smoothing must be one of {MAP_SMOOTHINGS}, got {self.map_smoothing!r}")
        if self.norm_match_gradient not in NORM_MATCH_GRADIENTS:
            raise InvalidInputError(
                f"norm_match_gradient must be one of {NORM_MATCH_GRADIENTS}, got {self.norm_match_gradient!r}"
            )
        if not self.paa_scales or any(s < 1 or s % 2 == 0 for s in self.paa_scales):
            raise InvalidInputError(f"paa_scales must be odd window sizes >= 1, got {self.paa_scales}")
        if self.etf_loss and self.etf_weight <= 0:
            raise InvalidInputError("etf_weight must be > 0 while etf_loss is on (set etf_loss: false for the ablation)")
        if self.balance_loss and self.balance_weight <= 0:
            raise InvalidInputError("balance_weight must be > 0 while balance_loss is on (set balance_loss: false for the ablation)")
        if self.score_temperature <= 0:
            raise InvalidInputError("score_temperature must be > 0")
        if self.dispatch not in DISPATCHES:
            raise InvalidInputError(f"dispatch must be one of {DISPATCHES}, got {self.dispatch!r}")
        if self.full_rank_experts and self.fofs:
            raise InvalidInputError("full_rank_experts has no A matrix to make orthogonal: set fofs: false")
