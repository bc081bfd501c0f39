"""Build a detector: a method on a frozen backbone, fresh or from a checkpoint."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..backbone import DEFAULT_MODEL_NAME, BackboneConfig, create_backbone, quick_gelu_for
from ..checkpoints import check_config_fits, load_method_state, read_checkpoint, resolve_checkpoint
from ..clip_weights import canonical_weights, is_random_weights
from ..errors import InvalidInputError, UntrainedAdaptersWarning
from . import DEFAULT_INIT_SEED, build_method, method_class
from .base import AnomalyDetector


def full_config(detector: AnomalyDetector) -> dict[str, Any]:
    """The config a checkpoint stores: enough to rebuild ``detector``."""
    backbone = detector.backbone.config.to_dict()  # resolved: a concrete image size
    backbone.pop("cache_dir", None)
    return {"method": detector.name, "method_config": detector.config.to_dict(), "backbone": backbone}


def build_detector(
    method: str | None = None,
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    method_config: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    for_training: bool = False,
    seed: int = DEFAULT_INIT_SEED,
    activation: str | None = None,
) -> AnomalyDetector:
    """Build a method on a frozen backbone, from scratch or from a checkpoint.

    A trainable method built without a checkpoint warns that its adapters are untrained,
    unless ``for_training`` says that is the point. ``seed`` fixes the initialisation of
    the method's own modules (see :func:`zsad.methods.build_method`); random backbone
    weights take their seed from ``weights`` (``random:SEED``).

    ``checkpoint`` names a file, a training run's folder or ``hf-hub:ORG/NAME[@REV]``
    (see :func:`zsad.checkpoints.resolve_checkpoint`). Its stored config decides the method, the backbone and
    the image size; anything passed explicitly must agree with it (otherwise a
    CheckpointError names the differences). ``weights`` may point the checkpoint's
    backbone to a local file.

    ``activation``: the blocks' MLP activation, ``quick_gelu`` or ``gelu`` (None = as the
    weights were trained: QuickGELU for OpenAI's); with a checkpoint it must agree with
    the one it was trained with.
    """
    quick_gelu = quick_gelu_for(activation)
    if checkpoint is None:
        if method is None:
            raise InvalidInputError("name a method (e.g. 'zeroshot') or give a checkpoint")
        return _fresh_detector(method, backbone, weights, image_size, method_config, cache_dir, for_training, seed, quick_gelu)
    return _detector_from_checkpoint(
        resolve_checkpoint(checkpoint), method, backbone, weights, image_size, method_config, cache_dir, seed, quick_gelu
    )


def _fresh_detector(
    method: str,
    backbone: str | None,
    weights: str | None,
    image_size: int | None,
    method_config: dict[str, Any] | None,
    cache_dir: str | None,
    for_training: bool,
    seed: int,
    quick_gelu: bool | None = None,
) -> AnomalyDetector:
    if method_class(method).trainable and not for_training:
        warnings.warn(
            f"method '{method}' is trainable but no checkpoint was given: its adapters are untrained (pass --checkpoint from `zsad train`)",
            UntrainedAdaptersWarning,
            stacklevel=3,
        )
    config = BackboneConfig(
        model_name=backbone or DEFAULT_MODEL_NAME,
        weights=weights or "openai",
        image_size=image_size,
        cache_dir=cache_dir,
        quick_gelu=quick_gelu,
    )
    return build_method(method, create_backbone(config), method_config, seed=seed)


def _detector_from_checkpoint(
    checkpoint: Path,
    method: str | None,
    backbone: str | None,
    weights: str | None,
    image_size: int | None,
    method_config: dict[str, Any] | None,
    cache_dir: str | None,
    seed: int,
    quick_gelu: bool | None = None,
) -> AnomalyDetector:
    """The checkpoint's stored config decides; what the caller names must agree with it
    (random backbone weights included: their seed is part of the model; the activation
    when the checkpoint names one)."""
    tensors, stored = read_checkpoint(checkpoint)
    config_class = method_class(stored["method"]).config_class
    stored_weights = stored["backbone"]["weights"]
    random_requested = weights is not None and is_random_weights(weights)
    requested = {
        "method": method,
        "backbone": {
            "model_name": backbone,
            "image_size": image_size,
            "weights": canonical_weights(weights) if random_requested else None,
            "quick_gelu": quick_gelu if stored["backbone"].get("quick_gelu") is not None else None,
        },
        # Compared in full, defaults filled in on both sides.
        "method_config": None if method_config is None else config_class.from_dict(method_config).to_dict(),
    }
    if random_requested and canonical_weights(stored_weights) == canonical_weights(weights):
        stored_weights = canonical_weights(weights)  # "random" and "random:0" are one seed
    comparable = {
        **stored,
        "backbone": {**stored["backbone"], "weights": stored_weights},
        "method_config": config_class.from_dict(stored["method_config"]).to_dict(),
    }
    ignored = [f"method_config.{name}" for name in config_class.runtime_fields]
    check_config_fits(requested, comparable, f"checkpoint {checkpoint}", ignored, only_given=True)
    config = BackboneConfig(
        model_name=stored["backbone"]["model_name"],
        weights=weights or stored_weights,
        image_size=stored["backbone"]["image_size"],
        cache_dir=cache_dir,
        quick_gelu=stored["backbone"].get("quick_gelu") if quick_gelu is None else quick_gelu,
    )
    detector = build_method(stored["method"], create_backbone(config), stored["method_config"], seed=seed)
    load_method_state(detector, tensors, str(checkpoint))
    return detector
