"""The ready-to-use predictor: a detector (a method on a frozen backbone) on its device,
with its prompt words, scoring images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.transforms import EvalTransform
from ..imageio import read_image
from ..maps import upsample
from ..methods.base import AnomalyDetector, refuse_set_method
from ..text import ClassNames
from .compilation import InferenceCall
from .runtime import autocast


@dataclass
class Prediction:
    """score in [0, 1]; anomaly_map (H, W) float32 in [0, 1] at the image's own size."""

    score: float
    anomaly_map: np.ndarray
    source: str | None = None


ImageInput = str | Path | Image.Image | torch.Tensor


class Predictor:
    """A detector ready to score images: ``zsad.load(...).predict(images)``.

    compile: ``off``, or a ``torch.compile`` mode for the detector's inference call (see
    :mod:`zsad.engine.compilation`); compile_backend: torch.compile's backend (tests use
    a fast one; users get inductor)."""

    def __init__(
        self,
        detector: AnomalyDetector,
        device: torch.device,
        class_names: ClassNames,
        precision: str = "fp32",
        compile: str = "off",
        compile_backend: str | Callable = "inductor",
    ):
        self.detector = detector.eval().to(device)
        self.device = device
        self.class_names = class_names
        self.precision = precision
        self.compile = compile
        self.inference = InferenceCall(self.detector, device, compile, compile_backend)
        self.transform = EvalTransform(detector.backbone.image_size)

    @property
    def image_size(self) -> int:
        return self.detector.backbone.image_size

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
        self.inference.reserve(min(batch_size, len(items)))
        predictions: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            pils = [self._to_pil(item) for item in items[start : start + batch_size]]
            scores, maps = self.score_and_map([pil for pil, _ in pils], class_name)
            for score, low, (pil, source) in zip(scores, maps, pils):
                full = upsample(torch.from_numpy(low)[None, None], (pil.height, pil.width))[0, 0]
                predictions.append(Prediction(score, full.clamp(0, 1).numpy(), source))
        return predictions

    @torch.no_grad()
    def score_and_map(self, images: Sequence[Image.Image], class_name: str | None = None) -> tuple[list[float], np.ndarray]:
        """One forward pass over RGB PIL images of any size: the image scores and the maps
        ``(B, S, S)`` float32 at the model's input size S (resize them to each image yourself,
        e.g. band by band with :mod:`zsad.map_files` for very large images). A method that
        scores sets (MuSc) is refused: see :mod:`zsad.engine.set_scoring`."""
        refuse_set_method(self.detector, "scoring images batch by batch (Predictor.predict, `zsad serve`)")
        batch = torch.stack([self.transform(pil, None)[0] for pil in images]).to(self.device)
        words = [self.class_names.resolve(class_name)] * len(images)
        with autocast(self.device, self.precision):
            maps, scores = self.inference(batch, words)
        return [float(score) for score in scores.float().cpu()], maps.float().cpu().numpy()
