"""Build a detector: a method on a frozen backbone, fresh or from a checkpoint."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..backbone import DEFAULT_MODEL_NAME, BackboneConfig, canonical_weights, create_backbone, is_random_weights
from ..checkpoints import CheckpointError, config_differences, load_method_state, read_checkpoint
from . import DEFAULT_INIT_SEED, build_method, method_class
from .base import AnomalyDetector


def full_config(detector: AnomalyDetector) -> dict[str, Any]:
    """The config a checkpoint stores: enough to rebuild ``detector``."""
    backbone = detector.backbone.config.to_dict()
    backbone["image_size"] = detector.backbone.image_size
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
) -> AnomalyDetector:
    """Build a method on a frozen backbone, from scratch or from a checkpoint.

    A trainable method built without a checkpoint warns that its adapters are untrained,
    unless ``for_training`` says that is the point. ``seed`` fixes the initialisation of
    the method's own modules (see :func:`zsad.methods.build_method`); random backbone
    weights take their seed from ``weights`` (``random:SEED``).

    With a checkpoint, its stored config decides the method, the backbone and the image
    size; anything passed explicitly must agree with it (otherwise a CheckpointError names
    the differences). ``weights`` may point the checkpoint's backbone to a local file.
    """
    if checkpoint is None:
        if method is None:
            raise ValueError("name a method (e.g. 'zeroshot') or give a checkpoint")
        cls = method_class(method)
        if cls.trainable and not for_training:
            warnings.warn(
                f"method '{method}' is trainable but no checkpoint was given: its adapters are untrained "
                "(pass --checkpoint from `zsad train`)",
                stacklevel=2,
            )
        config = BackboneConfig(
            model_name=backbone or DEFAULT_MODEL_NAME, weights=weights or "openai", image_size=image_size, cache_dir=cache_dir
        )
        return build_method(method, create_backbone(config), method_config, seed=seed)

    tensors, stored = read_checkpoint(checkpoint)
    requested = {
        "method": method,
        "backbone.model_name": backbone,
        "backbone.image_size": image_size,
    }
    stored_flat = {
        "method": stored["method"],
        "backbone.model_name": stored["backbone"]["model_name"],
        "backbone.image_size": stored["backbone"]["image_size"],
    }
    conflicts = [
        f"{key}: requested {value!r}, checkpoint has {stored_flat[key]!r}"
        for key, value in requested.items()
        if value is not None and value != stored_flat[key]
    ]
    stored_weights = stored["backbone"]["weights"]
    if weights is not None and is_random_weights(weights) and canonical_weights(weights) != canonical_weights(stored_weights):
        conflicts.append(f"backbone.weights: requested {canonical_weights(weights)!r}, checkpoint has {stored_weights!r}")
    if method_config is not None:
        stored_method_config = method_class(stored["method"]).config_class.from_dict(stored["method_config"]).to_dict()
        requested_config = method_class(stored["method"]).config_class.from_dict(method_config).to_dict()
        conflicts += [f"method_config.{d}" for d in config_differences(requested_config, stored_method_config)]
    if conflicts:
        raise CheckpointError(f"checkpoint {checkpoint} was made with another config: " + "; ".join(conflicts))
    config = BackboneConfig(
        model_name=stored["backbone"]["model_name"],
        weights=weights or stored_weights,
        image_size=stored["backbone"]["image_size"],
        cache_dir=cache_dir,
        quick_gelu=stored["backbone"].get("quick_gelu"),
    )
    detector = build_method(stored["method"], create_backbone(config), stored["method_config"], seed=seed)
    load_method_state(detector, tensors, str(checkpoint))
    return detector
