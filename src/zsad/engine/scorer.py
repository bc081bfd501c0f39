"""One interface for everything that scores images: :class:`Scorer`.

A scorer knows its input side (``image_size``) and scores a batch of RGB images in one
pass (:meth:`Scorer.score_and_map`). Everything else is written once on top of that:
:meth:`Scorer.predict` (maps at each image's own size), the prediction of folders
(:func:`zsad.engine.prediction.predict_files`), the reference folder of few-shot mode
(:func:`zsad.engine.fewshot.with_reference_folder`) and the HTTP service. The torch
detector (:class:`~zsad.engine.predictor.Predictor`) and the onnxruntime one
(:class:`~zsad.engine.onnx_export.OnnxPredictor`) are its two implementations.

A scorer also says what produced its outputs: :meth:`Scorer.provenance` (method,
backbone, weights: what every output file records) and :meth:`Scorer.identity`
(everything that decides the scores: model content, method config, prompt words,
references, calibration), which a resumed run must match.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidInputError
from ..imageio import read_image
from ..maps import upsample

if TYPE_CHECKING:
    from ..methods.fewshot import FewShotSettings

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass
class Prediction:
    """score in [0, 1]; anomaly_map (H, W) float32 in [0, 1] at the image's own size."""

    score: float
    anomaly_map: np.ndarray
    source: str | None = None


@dataclass(frozen=True)
class References:
    """What a scorer's few-shot memory bank was built from: ``sha256`` over the reference
    files' contents (in the order given), how many, and the fusion weight."""

    sha256: str
    count: int
    fusion_weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "count": self.count, "fusion_weight": self.fusion_weight}


def file_digest(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks (ONNX files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the contents of several files, in order (names do not count)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def to_pil(image: ImageInput) -> tuple[Image.Image, str | None]:
    """A path, a PIL image or a (3, H, W) RGB tensor (uint8, or float in [0, 1]) ->
    (8-bit RGB PIL image, the path as a string or None)."""
    if isinstance(image, (str, Path)):
        return read_image(image), str(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB"), None
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise InvalidInputError(f"tensor images must be (3, H, W) RGB, got {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            if image.min() < 0 or image.max() > 1:
                raise InvalidInputError("float tensor images must hold RGB values in [0, 1] (not normalised)")
            image = (image * 255).round().to(torch.uint8)
        return Image.fromarray(image.permute(1, 2, 0).cpu().numpy()), None
    raise TypeError(f"cannot predict on {type(image).__name__}; give paths, PIL images or tensors")


# The identity's entries that belong to a run rather than to the model.
RUN_IDENTITY_KEYS = ("class_words", "references", "calibration")


class Scorer(ABC):
    """Scores RGB images: the one interface of prediction, the service and batch jobs.

    Implementations give ``image_size`` (the model's input side S), :meth:`score_and_map`,
    :meth:`prompt_words`, :meth:`provenance` and :meth:`identity`; the rest is shared."""

    image_size: int

    @abstractmethod
    def score_and_map(self, images: Sequence[Image.Image], class_name: str | None = None) -> tuple[list[float], np.ndarray]:
        """One pass over RGB PIL images of any size -> (B image scores in [0, 1], maps
        ``(B, S, S)`` float32 in [0, 1] at the model's input side S). ``class_name``: the
        category key or words for the prompts (None: the scorer's default words)."""

    @abstractmethod
    def prompt_words(self, class_name: str | None = None) -> str:
        """The words the prompts use for ``class_name`` (a category key or words; None:
        the scorer's default). Raises InvalidInputError for words the scorer cannot use."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """What every output file records about the model: method, backbone, weights,
        image_size, pipeline_check (random weights)."""

    @abstractmethod
    def identity(self, class_name: str | None = None) -> dict[str, Any]:
        """Everything that decides the scores for ``class_name`` (JSON values): two scorers
        with equal identities give the same scores. Its ``references`` entry is None when
        not used; its ``calibration`` entry is None (a scorer gives raw scores: a run that
        applies a calibration fills it, see :func:`zsad.engine.prediction.predict_files`)."""

    def model_identity(self) -> dict[str, Any]:
        """The part of :meth:`identity` that is the model alone (no words, references or
        calibration): what a calibration file is tied to."""
        return {key: value for key, value in self.identity().items() if key not in RUN_IDENTITY_KEYS}

    def reserve(self, batch_size: int) -> None:
        """Prepare for batches of up to ``batch_size`` images (a compiled model compiles
        for that size once); nothing by default."""

    def with_references(
        self, references: torch.Tensor, settings: FewShotSettings, described: References | None = None
    ) -> Scorer:
        """This scorer in few-shot mode, with ``references`` (K, 3, S, S) preprocessed like
        test images in its memory bank; ``described`` goes into its identity."""
        raise InvalidInputError(f"{type(self).__name__} cannot use reference images (few-shot mode needs the torch model)")

    def predict(self, images: ImageInput | Sequence[ImageInput], class_name: str | None = None, batch_size: int = 8) -> list[Prediction]:
        """Score images (paths, PIL images, or (3, H, W) RGB tensors in [0, 1]; a batch
        tensor (B, 3, H, W) is split) -> one :class:`Prediction` each, its map at the
        image's own size."""
        self.prompt_words(class_name)  # refuse unusable words before reading any image
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, torch.Tensor) and images.dim() == 3):
            images = [images]
        items = list(images)
        self.reserve(min(batch_size, len(items)))
        predictions: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            pils = [to_pil(item) for item in items[start : start + batch_size]]
            scores, maps = self.score_and_map([pil for pil, _ in pils], class_name)
            for score, low, (pil, source) in zip(scores, maps, pils):
                full = upsample(torch.from_numpy(np.ascontiguousarray(low))[None, None], (pil.height, pil.width))[0, 0]
                predictions.append(Prediction(score, full.clamp(0, 1).numpy(), source))
        return predictions
