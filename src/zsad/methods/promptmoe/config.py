"""PromptMoE settings: the paper's recipe by default, every ablation one field."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInputError
from ..base import MethodConfig

COMPOSITIONS = ("routed", "averaged")


@dataclass
class PromptMoEConfig(MethodConfig):
    """Fields (docs/specification.md (PromptMoE), paper Sec. "Implementation details" and appendix A):

    taps: 1-based blocks whose patch features give maps (empty = D/4, D/2, 3D/4, D,
        i.e. 6/12/18/24 on ViT-L).
    vv_path: read the taps at or after ``vv_start`` from the V-V stream; vv_start: its
        first block (None = D/2 + 1).
    composition: ``routed`` = VGMoP (visual queries, router, top-k mixture of expert
        prompts); ``averaged`` = no router: every expert prompt is encoded and the text
        features are averaged (Tab. 2 "static ensemble"; with num_experts 1 the "static
        prompt" row).
    per_layer_prompts: one prompt module per tap (True) or one, fed by the last tap,
        shared by all taps (Tab. 2 "single layer").
    shared_attention: one query cross-attention feeds both routers (True; the spec's
        single r^(l)), or the normal and the abnormal branch each have their own (False:
        Tab. 5 "Separate Components", the paper's default and recipe). True is the
        default so that checkpoints written before the switch existed load unchanged.
    shared_pool: the normal and abnormal routers mix experts of ONE pool (Tab. 5 "w/
        Shared Prompt Pool"): E experts of max(M_n, M_a) tokens, a branch takes its first
        M tokens of the mixture; routed composition only.
    num_experts, top_k: E and k of each pool (8 and 4; k is unused by ``averaged``).
    num_queries, attention_heads: N_q learnable queries and the heads of their
        cross-attention (8 and 8).
    router_hidden: hidden width of the Linear-ReLU-Linear router (256).
    normal_length, abnormal_length: M_n and M_a tokens of a normal / abnormal expert (5, 6).
    context_length: M_q shared learnable context tokens after the class name (8).
    use_class_names: put the category words between the learned tokens (False = always
        "object").
    init_std: standard deviation of the normal initialisation of learned tokens/queries.
    balance_weight: alpha of L_balance (Eq. 4; 0 = off); decouple_weight: beta of
        L_decouple (Eq. 5; 0 = off).
    map_temperature: tau of the patch-text softmax (Eq. 6, 0.07); score_temperature: tau'
        of the image-level softmax (Eq. 7, 0.01, paper App. A: at 0.07 a cosine gap of 0.02
        gives 0.57 instead of 0.88, and the image branch barely counts).
    focal_gamma: focusing parameter of the focal loss.
    smoothing_sigma: Gaussian smoothing of the output map, px at 518 (scaled with size).
    """

    taps: tuple[int, ...] = ()
    vv_path: bool = True
    vv_start: int | None = None
    composition: str = "routed"
    per_layer_prompts: bool = True
    shared_attention: bool = True
    shared_pool: bool = False
    num_experts: int = 8
    top_k: int = 4
    num_queries: int = 8
    attention_heads: int = 8
    router_hidden: int = 256
    normal_length: int = 5
    abnormal_length: int = 6
    context_length: int = 8
    use_class_names: bool = True
    init_std: float = 0.02
    balance_weight: float = 0.01
    decouple_weight: float = 0.005
    map_temperature: float = 0.07
    score_temperature: float = 0.01
    focal_gamma: float = 2.0
    smoothing_sigma: float = 4.0

    def __post_init__(self) -> None:
        if self.composition not in COMPOSITIONS:
            raise InvalidInputError(f"composition must be one of {COMPOSITIONS}, got {self.composition!r}")
        if self.shared_pool and self.composition != "routed":
            raise InvalidInputError("shared_pool needs composition 'routed' (static prompts pair expert j of each pool)")
        if self.num_experts < 1:
            raise InvalidInputError(f"num_experts must be >= 1, got {self.num_experts}")
        if self.composition == "routed" and not 1 <= self.top_k <= self.num_experts:
            raise InvalidInputError(f"need 1 <= top_k <= num_experts, got top_k={self.top_k}, num_experts={self.num_experts}")
        for name in ("num_queries", "attention_heads", "router_hidden", "normal_length", "abnormal_length"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context_length < 0:
            raise InvalidInputError(f"context_length must be >= 0, got {self.context_length}")
        for name in ("balance_weight", "decouple_weight", "smoothing_sigma", "focal_gamma"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.map_temperature <= 0 or self.score_temperature <= 0:
            raise InvalidInputError("map_temperature and score_temperature must be > 0")
        if self.init_std <= 0:
            raise InvalidInputError(f"init_std must be > 0, got {self.init_std}")
