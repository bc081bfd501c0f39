"""The contract every method follows: images in, a typed output out."""
from __future__ import annotations

import contextlib
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Protocol, Sequence

import torch
from torch import nn

from ..backbone import ClipBackbone
from ..checkpoints import own_state
from ..errors import InvalidInputError
from ..settings import DEFAULT_DOMAIN, DOMAINS, Settings


@dataclass
class Routing:
    """The routing decisions of one routed layer for the L patch tokens of B images.

    probabilities: (B, L, K) the router's softmax over the K experts.
    topk_index: (B, L, k) the selected experts, by decreasing probability.
    topk_weight: (B, L, k) their renormalised weights (sum 1 over k).
    expert_outputs: (B, L, K, d) every expert's output where the method kept them
        (see ``AnomalyDetector.keeping_expert_outputs``), else None.
    grid: (h, w) patch grid, h * w = L, row-major token order.
    """

    probabilities: torch.Tensor
    topk_index: torch.Tensor
    topk_weight: torch.Tensor
    expert_outputs: torch.Tensor | None
    grid: tuple[int, int]

    @property
    def num_experts(self) -> int:
        return self.probabilities.shape[-1]

    @property
    def top_k(self) -> int:
        return self.topk_index.shape[-1]


@dataclass
class DetectorOutput:
    """What a detector returns for a batch.

    anomaly_map: (B, H, W) values in [0, 1] at the input resolution.
    pred_score: (B,) image anomaly scores in [0, 1].
    losses: named scalar losses, filled only when targets are given in training.
    routing: layer name (e.g. the 1-based block, "18") -> its routing, for methods
        that route tokens to experts (what the expert analyses read).
    monitors: named scalars logged with the losses but never optimised (e.g. an
        auxiliary loss whose weight is 0 in an ablation).
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    routing: dict[str, Routing] = field(default_factory=dict)
    monitors: dict[str, torch.Tensor] = field(default_factory=dict)


class OptimiserSettings(Protocol):
    """The training settings an optimisation hook reads (the engine's TrainingConfig)."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    warmup_epochs: int


Optimisation = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]


def step_schedule(
    optimizer: torch.optim.Optimizer, settings: OptimiserSettings, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: the learning rate times ``gamma`` at each milestone step, after a
    linear warm-up from 1/W to 1 over the first W = ``warmup_epochs * steps_per_epoch``
    steps (none when ``warmup_epochs`` is 0)."""
    warmup_steps = settings.warmup_epochs * steps_per_epoch
    if warmup_steps == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(settings.milestones), gamma=settings.gamma)
    milestones = sorted(settings.milestones)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) * settings.gamma ** bisect_right(milestones, step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class MethodConfig(Settings):
    """Base class of method configs (plain fields, JSON round trip, checked keys)."""


class AnomalyDetector(nn.Module):
    """Base class: a frozen backbone plus the method's own (possibly trainable) modules.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`detect`, plus
    :meth:`prompt_inputs` when they read the prompt words.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    trainable: ClassVar[bool] = False
    # Transductive: an image's output depends on the other images of the set it is scored
    # with (e.g. MuSc), so a batch is a set, never a slice of independent images. Entry
    # points that hand the method one image at a time refuse it (see refuse_set_method).
    scores_sets: ClassVar[bool] = False

    def __init__(self, backbone: ClipBackbone, config: MethodConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config
        # The kind of images scored (``settings.DOMAINS``); see :meth:`scoring_domain`.
        self.domain = DEFAULT_DOMAIN

    @contextlib.contextmanager
    def scoring_domain(self, domain: str | None) -> Iterator[None]:
        """Within this context the detector scores images of ``domain`` (``industrial`` or
        ``medical``; None = unchanged), e.g. the domain of the data set being evaluated;
        the previous domain is restored afterwards. Only methods whose recipe depends on
        the domain (MoECLIP's smoothing and score) read it."""
        previous = self.domain
        self.use_domain(domain or previous)
        try:
            yield
        finally:
            self.domain = previous

    def use_domain(self, domain: str) -> None:
        """Score images of ``domain`` from now on (e.g. a predictor for one kind of images)."""
        if domain not in DOMAINS:
            raise InvalidInputError(f"domain must be one of {DOMAINS}, got {domain!r}")
        self.domain = domain

    def forward(
        self,
        images: torch.Tensor,
        class_names: Sequence[str] | None,
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prompts: Any = None,
    ) -> DetectorOutput:
        """images (B, 3, S, S); class_names (B,) prompt words. For training losses only:
        masks (B, 1, S, S) in {0, 1}, all -1 for an image without a pixel label (no
        segmentation loss for it); labels (B,) in {0, 1}, -1 when unknown.

        ``detect(images, prompt_inputs(class_names))``; ``prompts``, when given, are those
        prompt inputs already computed (``class_names`` is then not read), which is how a
        compiled call keeps the words (Python strings) out of its graph."""
        if prompts is None:
            prompts = self.prompt_inputs(class_names, images.device)
        return self.detect(images, prompts, masks, labels)

    def prompt_inputs(self, class_names: Sequence[str], device: torch.device) -> Any:
        """The prompt words of a batch turned into what :meth:`detect` reads: tensors (or a
        tuple of tensors) with the batch on the first dimension, e.g. (B, 2, d_t) text
        features. Runs eagerly (tokenizer, caches), outside any compiled graph. Default:
        None, for methods that do not read the words."""
        return None

    def detect(
        self, images: torch.Tensor, prompts: Any, masks: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> DetectorOutput:
        """:meth:`forward` with the prompt inputs given (see :meth:`prompt_inputs`): tensor
        work only, so that ``torch.compile`` captures it. A method implements this (or,
        eager only, overrides :meth:`forward` itself)."""
        raise NotImplementedError(f"method '{self.name}' implements neither detect nor forward")

    @classmethod
    def compilable(cls) -> bool:
        """Whether the method implements :meth:`detect`, the call that ``--compile`` captures
        (a method that only overrides :meth:`forward` runs eagerly)."""
        return cls.detect is not AnomalyDetector.detect and cls.forward is AnomalyDetector.forward

    def keeping_expert_outputs(self) -> contextlib.AbstractContextManager:
        """Within this context a routed method fills ``Routing.expert_outputs`` (e.g. by
        running every expert on every token); methods that do not route change nothing."""
        return contextlib.nullcontext()

    def expert_prompts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The learned expert prompts of a method with prompt pools (PromptMoE Fig. 8):
        layer name (e.g. the 1-based block, "6") -> pool name (e.g. ``normal``,
        ``abnormal``) -> (E, M, D) token embeddings of its E experts, M tokens each, D the
        text token width; detached. Methods without expert prompts: empty (the default)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What every output file records about the model that produced it."""
        described = self.backbone.describe()
        return {
            "method": self.name,
            "backbone": described["model_name"],
            "weights": described["weights"],
            "image_size": described["image_size"],
            "pipeline_check": described["random_weights"],
        }

    def feature_taps(self) -> tuple[int, ...]:
        """1-based blocks whose patch features this method reads (default D/4, D/2, 3D/4, D).
        Methods with their own taps override this."""
        return self.backbone.default_taps()

    @torch.no_grad()
    def tapped_patch_features(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Patch features for few-shot memory banks: images (B, 3, S, S) -> block -> (B, L, d)
        patch tokens (CLS dropped, L = h * w raster order, d = backbone width) of the
        frozen backbone's residual stream after each block of :meth:`feature_taps`.
        Method-independent by default, so references and test images are comparable."""
        taps = self.feature_taps()
        features = self.backbone.forward_visual(images, taps=taps)
        return {block: features.hidden[block][:, 1:] for block in taps}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own state: every tensor outside the frozen backbone that is saved
        (trainable parameters and persistent buffers such as frozen FOFS projections)."""
        return own_state(self.state_dict())

    def parameter_groups(self, settings: OptimiserSettings) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (default: one group of every parameter that
        requires gradients, at the settings' learning rate)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimisation(self, settings: OptimiserSettings, steps_per_epoch: int) -> Optimisation:
        """The optimiser and the per-step schedule the engine trains with, built once the
        number of steps per epoch is known. Default: Adam over ``parameter_groups`` and
        ``step_schedule``; a method overrides this (or ``parameter_groups``) for its recipe."""
        optimizer = torch.optim.Adam(
            self.parameter_groups(settings), lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay
        )
        return optimizer, step_schedule(optimizer, settings, steps_per_epoch)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def scores_sets(detector: nn.Module) -> bool:
    """Whether ``detector`` scores sets (a wrapper such as the few-shot detector, which
    is not an AnomalyDetector, scores images one at a time)."""
    return bool(getattr(detector, "scores_sets", False))


def refuse_set_method(detector: nn.Module, entry_point: str, instead: str = "") -> None:
    """Raise InvalidInputError when ``detector`` scores sets (``scores_sets``) and
    ``entry_point`` (e.g. "zsad serve") would hand it images one at a time."""
    if scores_sets(detector):
        raise InvalidInputError(
            f"--method {detector.name} scores a set of images of one product against each other (transductive), "
            f"so {entry_point}, which scores images one at a time, cannot run it"
            + (f"; {instead}" if instead else "; use `zsad predict FOLDER --method " + detector.name + "`")
        )
