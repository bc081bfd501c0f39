"""Training settings (the `training:` section of a recipe): one dataclass, JSON round trip."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError
from ..settings import COMPILE_MODES, PRECISIONS, Settings


@dataclass
class TrainingConfig(Settings):
    """How a method is trained (defaults: MoECLIP's recipe, paper B.3).

    epochs: passes over the training data; the final model is the last epoch's.
    batch_size: images per optimiser step (per process under torchrun).
    lr, betas, weight_decay: Adam.
    milestones, gamma: MultiStepLR, stepped once per optimiser step (milestones count
        iterations, not epochs).
    warmup_epochs: linear learning-rate warm-up over this many epochs (0 = none).
    seed: seeds model initialisation, data order (per epoch), augmentation (per image)
        and dropout (per epoch), so a resumed run repeats the straight run exactly.
    precision: fp32, or bf16 autocast (GPU only).
    augment, augment_p: joint image/mask augmentation, each op with probability p.
    num_workers: data-loading processes per training process (None = from the CPU count,
        see ``runtime.default_num_workers``).
    include_train_split: also train on each data set's train/good images (``--split all``);
        by default a data set contributes its labelled test split, as in the papers.
    max_steps_per_epoch: stop an epoch after this many optimiser steps (quick runs).
    log_every: write a train_log.csv row every N steps.
    activation_checkpointing: recompute frozen activations in the backward pass (less
        memory), for methods whose config has this switch.
    cache_images: keep the decoded images, resized, in memory after the first read when
        the training set fits the cache budget (see ``train_data.image_cache_budget``).
    compile: ``off``, or the ``torch.compile`` mode of the forward pass and losses (see
        ``engine.compilation``); how, not what, is computed.
    """

    # May differ between a run and its resumption without changing what is learned: more
    # epochs, data-loading processes, logging rate, activation recomputation, image caching,
    # compilation.
    runtime_fields = ("epochs", "num_workers", "log_every", "activation_checkpointing", "cache_images", "compile")

    epochs: int = 20
    batch_size: int = 2
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (16000, 32000)
    gamma: float = 0.5
    warmup_epochs: int = 0
    seed: int = 0
    precision: str = "fp32"
    augment: bool = True
    augment_p: float = 0.5
    num_workers: int | None = None
    include_train_split: bool = False
    max_steps_per_epoch: int | None = None
    log_every: int = 1
    activation_checkpointing: bool = False
    cache_images: bool = True
    compile: str = "off"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise InvalidInputError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise InvalidInputError(f"betas must be two values in [0, 1), got {self.betas}")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise InvalidInputError(f"milestones must be increasing positive step counts, got {self.milestones}")
        if self.warmup_epochs < 0:
            raise InvalidInputError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.augment_p <= 1.0:
            raise InvalidInputError(f"augment_p must be in [0, 1], got {self.augment_p}")
        if self.num_workers is not None and self.num_workers < 0:
            raise InvalidInputError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise InvalidInputError(f"max_steps_per_epoch must be >= 1 or None, got {self.max_steps_per_epoch}")
        if self.compile not in COMPILE_MODES:
            raise InvalidInputError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.log_every < 1:
            raise InvalidInputError(f"log_every must be >= 1, got {self.log_every}")

    def split(self) -> str:
        """The data-set split trained on: ``test`` or ``all`` (test + train/good)."""
        return "all" if self.include_train_split else "test"
