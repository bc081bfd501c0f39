"""Python API: build a detector (fresh or from a checkpoint) and predict on images."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .backbone import DEFAULT_MODEL_NAME, BackboneConfig, canonical_weights, create_backbone, is_random_weights
from .data.transforms import EvalTransform
from .engine.checkpoints import CheckpointError, config_differences, load_method_state, read_checkpoint
from .engine.runtime import autocast, resolve_device
from .imageio import read_image
from .maps import upsample
from .methods import DEFAULT_INIT_SEED, build_method, method_class
from .methods.base import AnomalyDetector
from .text import ClassNames


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


@dataclass
class Prediction:
    """score in [0, 1]; anomaly_map (H, W) float32 in [0, 1] at the image's own size."""

    score: float
    anomaly_map: np.ndarray
    source: str | None = None


ImageInput = str | Path | Image.Image | torch.Tensor


class Detector:
    """A ready-to-use detector: ``zsad.load(...).predict(images)``."""

    def __init__(self, model: AnomalyDetector, device: torch.device, class_names: ClassNames, precision: str = "fp32"):
        self.model = model.eval().to(device)
        self.device = device
        self.class_names = class_names
        self.precision = precision
        self.transform = EvalTransform(model.backbone.image_size)

    @property
    def image_size(self) -> int:
        return self.model.backbone.image_size

    def _to_pil(self, image: ImageInput) -> tuple[Image.Image, str | None]:
        if isinstance(image, (str, Path)):
            return read_image(image), str(image)
        if isinstance(image, Image.Image):
            return image.convert("RGB"), None
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"tensor images must be (3, H, W) RGB, got {tuple(image.shape)}")
            if image.dtype != torch.uint8:
                if image.min() < 0 or image.max() > 1:
                    raise ValueError("float tensor images must hold RGB values in [0, 1] (not normalised)")
                image = (image * 255).round().to(torch.uint8)
            return Image.fromarray(image.permute(1, 2, 0).cpu().numpy()), None
        raise TypeError(f"cannot predict on {type(image).__name__}; give paths, PIL images or tensors")

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput], class_name: str | None = None, batch_size: int = 8) -> list[Prediction]:
        """Score images (paths, PIL images, or (3, H, W) RGB tensors in [0, 1]; a batch
        tensor (B, 3, H, W) is split). class_name: the category key or words for the
        prompts (None = 'object' unless --class-name was set)."""
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, torch.Tensor) and images.dim() == 3):
            images = [images]
        items = list(images)
        predictions: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            pils = [self._to_pil(item) for item in items[start : start + batch_size]]
            batch = torch.stack([self.transform(pil, None)[0] for pil, _ in pils]).to(self.device)
            words = [self.class_names.resolve(class_name)] * len(pils)
            with autocast(self.device, self.precision):
                output = self.model(batch, words)
            for row, (pil, source) in enumerate(pils):
                full = upsample(output.anomaly_map[row : row + 1, None].float(), (pil.height, pil.width))[0, 0]
                predictions.append(Prediction(float(output.pred_score[row]), full.clamp(0, 1).cpu().numpy(), source))
        return predictions


def load(
    method: str | None = None,
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    device: str | None = None,
    class_name: str | None = None,
    class_names_file: str | Path | None = None,
    precision: str = "fp32",
    cache_dir: str | None = None,
    method_config: dict[str, Any] | None = None,
) -> Detector:
    """``zsad.load("zeroshot")`` or ``zsad.load(checkpoint="runs/moeclip")`` -> Detector."""
    model = build_detector(method, checkpoint, backbone, weights, image_size, method_config, cache_dir)
    return Detector(model, resolve_device(device), ClassNames.load(class_names_file, class_name), precision)


def iter_image_files(inputs: Iterable[str | Path], extensions: Sequence[str]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; a named file is
    kept whatever its extension so that a wrong file is reported, not silently dropped."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return found
