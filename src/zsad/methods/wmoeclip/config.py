"""WMoE-CLIP settings (docs/specification.md (WMoE-CLIP)): the spec's choices by default, each module one switch."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInputError
from ..base import MethodConfig


@dataclass
class WMoEClipConfig(MethodConfig):
    """Fields (constants the spec marks "chosen" are settings here):

    taps: 1-based blocks whose patch features feed WCMA, the maps and SA-MoE
        (empty = D/4, D/2, 3D/4, D, i.e. 6/12/18/24 on ViT-L).
    prompt_length: learnable tokens v_n / v_a per prompt (the paper's sequence length, 2).
    normal_prefix, abnormal_prefix: the fixed words before v_n / v_a.
    ctds: Class Token Distribution Sampling on (False = Tab. 2 ablation: the learnable
        tokens are used as they are, the same prompts for every image).
    latent_dim: size of the VAE latent z (128).
    decoder_hidden: hidden width of the VAE decoder MLP (None = d_t).
    wcma: Wavelet-enhanced Cross-Modal Attention on (False = the maps use T_n, T_a).
    wcma_reduction: channel reduction of the global frequency weighting (4).
    wcma_heads: heads of the text-to-image cross-attention (8; must divide d_t).
    samoe: Semantic-Aware MoE on (False = the image score uses the global feature g).
    adapter_dim: d_a, width of each layer's context adapter (256).
    num_experts, top_k: E and k of the SA-MoE router (8, 2).
    expert_hidden: hidden width of the expert MLPs (None = d_t).
    temperature: of the softmax over the cosines with [T_n, T_a] (0.07).
    focal_weight, dice_weight, bce_weight: weights of the map and image losses (1 each).
    per_tap_segmentation_loss: focal + Dice on each tap's map, summed (False = once, on
        the final map, the mean over the taps, as the spec's Eq. 9-11 read).
    kl_weight, rec_weight: weights of the VAE losses (0.01, 1.0).
    balance_loss, balance_weight: CV^2 load-balance loss on the SA-MoE router (not in
        the paper; on, 0.01).
    smoothing_sigma: Gaussian smoothing of the inference map, px at 518 (scaled with size).
    vv_path: read the maps' patch features from the V-V stream (not in the spec; off).
    """

    taps: tuple[int, ...] = ()
    prompt_length: int = 2
    normal_prefix: str = "a photo of a good"
    abnormal_prefix: str = "a photo of a damaged"
    ctds: bool = True
    latent_dim: int = 128
    decoder_hidden: int | None = None
    wcma: bool = True
    wcma_reduction: int = 4
    wcma_heads: int = 8
    samoe: bool = True
    adapter_dim: int = 256
    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int | None = None
    temperature: float = 0.07
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    per_tap_segmentation_loss: bool = False
    kl_weight: float = 0.01
    rec_weight: float = 1.0
    balance_loss: bool = True
    balance_weight: float = 0.01
    smoothing_sigma: float = 4.0
    vv_path: bool = False

    def __post_init__(self) -> None:
        positive = {
            "prompt_length": self.prompt_length,
            "latent_dim": self.latent_dim,
            "wcma_reduction": self.wcma_reduction,
            "wcma_heads": self.wcma_heads,
            "adapter_dim": self.adapter_dim,
            "num_experts": self.num_experts,
        }
        for name, value in positive.items():
            if value < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {value}")
        for name in ("decoder_hidden", "expert_hidden"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1 or null, got {getattr(self, name)}")
        if not 1 <= self.top_k <= self.num_experts:
            raise InvalidInputError(f"need 1 <= top_k <= num_experts, got top_k={self.top_k}, num_experts={self.num_experts}")
        if self.temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        weights = ("focal_weight", "dice_weight", "bce_weight", "kl_weight", "rec_weight", "balance_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.normal_prefix.strip() or not self.abnormal_prefix.strip():
            raise InvalidInputError("normal_prefix and abnormal_prefix must hold words")
