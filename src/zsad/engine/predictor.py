"""The ready-to-use predictor: a detector (a method on a frozen backbone) on its device,
with its prompt words, scoring images (the torch :class:`~zsad.engine.scorer.Scorer`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checkpoints import state_digest
from ..data.transforms import EvalTransform
from ..errors import InvalidInputError
from ..methods.base import AnomalyDetector, refuse_set_method, scores_sets
from ..methods.fewshot import FewShotDetector, FewShotSettings
from ..text import ClassNames
from .compilation import InferenceCall
from .runtime import autocast
from .scorer import ImageInput, Prediction, References, Scorer

__all__ = ["ImageInput", "Prediction", "Predictor"]


class Predictor(Scorer):
    """A detector ready to score images: ``zsad.load(...).predict(images)``.

    compile: ``off``, or a ``torch.compile`` mode for the detector's inference call (see
    :mod:`zsad.engine.compilation`); compile_backend: torch.compile's backend (tests use
    a fast one; users get inductor). references: what a few-shot detector's memory bank
    holds (set by :meth:`with_references`)."""

    def __init__(
        self,
        detector: AnomalyDetector,
        device: torch.device,
        class_names: ClassNames,
        precision: str = "fp32",
        compile: str = "off",
        compile_backend: str | Callable = "inductor",
        references: References | None = None,
    ):
        if compile != "off" and scores_sets(detector):
            raise InvalidInputError(
                f"--compile {compile} does not apply to --method {detector.name}: it scores a whole set at once by "
                "blocked mutual scoring, not by the compiled batch call; use --compile off"
            )
        self.detector = detector.eval().to(device)
        self.device = device
        self.class_names = class_names
        self.precision = precision
        self.compile = compile
        self.references = references
        self.inference = InferenceCall(self.detector, device, compile, compile_backend)
        self.transform = EvalTransform(detector.backbone.image_size)
        self._state_digest: str | None = None

    @property
    def image_size(self) -> int:
        return self.detector.backbone.image_size

    def prompt_words(self, class_name: str | None = None) -> str:
        return self.class_names.resolve(class_name)

    def provenance(self) -> dict[str, Any]:
        return self.detector.provenance()

    def identity(self, class_name: str | None = None) -> dict[str, Any]:
        """The provenance, the method config (without its runtime fields), the backbone's
        config (its activation included), the domain the images are scored in, a content
        hash of the method's own tensors, the precision, the prompt words and the references."""
        if self._state_digest is None:  # the weights are frozen at inference: hash them once
            self._state_digest = state_digest(self.detector.trainable_state_dict())
        config = self.detector.config.to_dict()
        for name in type(self.detector.config).runtime_fields:
            config.pop(name, None)
        backbone = self.detector.backbone.config.to_dict()  # the activation (quick_gelu) included
        backbone.pop("cache_dir", None)
        return {
            "runtime": "torch",
            **self.provenance(),
            "method_config": config,
            "backbone_config": backbone,
            "domain": self.detector.domain,
            "own_state_sha256": self._state_digest,
            "precision": self.precision,
            "class_words": self.prompt_words(class_name),
            "references": None if self.references is None else self.references.to_dict(),
            "calibration": None,
        }

    def refuse_compiled(self) -> None:
        """Few-shot mode runs eagerly: its memory-bank lookup is per category, in Python."""
        if self.compile != "off":
            raise InvalidInputError(
                f"--compile {self.compile} does not apply to few-shot mode (--reference, --shots): the memory bank "
                "is searched per category in Python; use --compile off"
            )

    def reserve(self, batch_size: int) -> None:
        self.inference.reserve(batch_size)

    def with_references(
        self, references: torch.Tensor, settings: FewShotSettings, described: References | None = None
    ) -> Predictor:
        """A Predictor in few-shot mode whose bank holds ``references`` (K, 3, S, S), for
        every category (``described`` by default: the tensors' content hash). Few-shot mode
        runs eagerly (its bank is searched per category in Python): a compiled predictor is
        refused."""
        self.refuse_compiled()
        if described is None:
            described = References(state_digest({"references": references}), references.shape[0], settings.weight)
        detector = FewShotDetector(self.detector, settings)
        detector.add_references(references.to(self.device))
        return Predictor(detector, self.device, self.class_names, self.precision, references=described)

    @torch.no_grad()
    def score_and_map(self, images: Sequence[Image.Image], class_name: str | None = None) -> tuple[list[float], np.ndarray]:
        """One forward pass over RGB PIL images of any size: the image scores and the maps
        ``(B, S, S)`` float32 at the model's input size S (resize them to each image yourself,
        e.g. band by band with :mod:`zsad.map_files` for very large images). A method that
        scores sets (MuSc) is refused: see :mod:`zsad.engine.set_scoring`."""
        refuse_set_method(self.detector, "scoring images batch by batch (Predictor.predict, `zsad serve`)")
        batch = torch.stack([self.transform(pil, None)[0] for pil in images]).to(self.device)
        words = [self.prompt_words(class_name)] * len(images)
        with autocast(self.device, self.precision):
            maps, scores = self.inference(batch, words)
        return [float(score) for score in scores.float().cpu()], maps.float().cpu().numpy()
