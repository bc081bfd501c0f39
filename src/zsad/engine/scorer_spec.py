"""A scorer described by a few plain values, built where it runs.

:class:`ScorerSpec` holds only strings, numbers and a JSON-like method config, so it
pickles in a few hundred bytes: a batch job sends it to its worker processes, and each
calls :meth:`ScorerSpec.build` once to get its own :class:`~zsad.engine.scorer.Scorer`
(a torch :class:`~zsad.engine.predictor.Predictor`, or an ONNX file's
:class:`~zsad.engine.onnx_export.OnnxPredictor`), with its reference folder if any.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..methods.build import build_detector
from ..text import ClassNames
from .compilation import check_compile_mode
from .fewshot import with_reference_folder
from .predictor import Predictor
from .runtime import resolve_device
from .scorer import Scorer


@dataclass(frozen=True)
class ScorerSpec:
    """Everything that builds one scorer.

    method / checkpoint (a file, a run folder or ``hf-hub:ORG/NAME[@REV]``) / backbone /
    weights / image_size / method_config / cache_dir: the detector (see
    :func:`zsad.methods.build.build_detector`); device (None = CUDA when available),
    precision, compile: how it runs; class_name / class_names_file: the prompt words;
    onnx: an exported file to run with onnxruntime instead (the model options then may
    only repeat what the file holds); reference / fusion_weight: a folder of normal
    images for few-shot mode; activation (``quick_gelu`` / ``gelu``, None = as the weights
    were trained) and domain (``industrial`` / ``medical``, None = the method's default):
    see :func:`zsad.api.load`."""

    method: str | None = None
    checkpoint: str | None = None
    backbone: str | None = None
    weights: str | None = None
    image_size: int | None = None
    method_config: dict[str, Any] | None = None
    cache_dir: str | None = None
    device: str | None = None
    precision: str = "fp32"
    compile: str = "off"
    class_name: str | None = None
    class_names_file: str | None = None
    onnx: str | None = None
    reference: str | None = None
    fusion_weight: float = 0.5
    activation: str | None = None
    domain: str | None = None

    def build(self) -> Scorer:
        """The scorer this spec describes (the weights are read here)."""
        scorer = self._build_onnx() if self.onnx is not None else self.build_predictor()
        if self.reference is not None:
            scorer = with_reference_folder(scorer, Path(self.reference), self.fusion_weight)
        return scorer

    def build_predictor(self) -> Predictor:
        """The torch predictor of this spec, without references."""
        device = resolve_device(self.device)
        check_compile_mode(self.compile, device)  # before the model is built
        detector = build_detector(
            self.method, self.checkpoint, self.backbone, self.weights, self.image_size, self.method_config, self.cache_dir,
            activation=self.activation,
        )
        if self.domain is not None:
            detector.use_domain(self.domain)
        return Predictor(detector, device, self._class_names(), self.precision, self.compile)

    def _class_names(self) -> ClassNames:
        return ClassNames.load(self.class_names_file, self.class_name)

    def _build_onnx(self) -> Scorer:
        from .onnx_export import OnnxPredictor  # onnxruntime only when asked for

        fixed = {"--method": self.method, "--checkpoint": self.checkpoint, "--config": self.method_config, "--reference": self.reference}
        given = [option for option, value in fixed.items() if value is not None]
        if given:
            raise InvalidInputError(f"--onnx runs the exported model as it is: drop {'/'.join(given)} (fixed by `zsad export`)")
        if self.compile != "off":
            raise InvalidInputError("--compile applies to torch models, not to --onnx (onnxruntime runs the exported graph)")
        scorer = OnnxPredictor(self.onnx)
        words = None if self.class_name is None else self._class_names().resolve(None)
        scorer.check_fits({"backbone": self.backbone, "weights": self.weights, "image_size": self.image_size, "class_words": words})
        return scorer
