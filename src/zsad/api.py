"""Python API: build a detector (fresh or from a checkpoint) and predict on images."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine.predictor import Prediction, Predictor
from .engine.scorer import Scorer
from .engine.scorer_spec import ScorerSpec
from .methods.build import build_detector, full_config

__all__ = ["Prediction", "Predictor", "Scorer", "ScorerSpec", "build_detector", "full_config", "load"]


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
    compile: str = "off",
    activation: str | None = None,
    domain: str | None = None,
) -> Predictor:
    """``zsad.load("zeroshot")`` or ``zsad.load(checkpoint="runs/moeclip")`` -> Predictor.
    A checkpoint may be a file, a training run's folder (its final or latest model) or
    ``hf-hub:ORG/NAME[@REV]``. compile: ``off``, ``default``, ``max-autotune`` or
    ``reduce-overhead`` (CUDA graphs, CUDA only): the inference call under
    ``torch.compile`` (the first batches compile). activation: the backbone's MLP
    activation, ``quick_gelu`` or ``gelu`` (None = as the weights were trained). domain:
    ``industrial`` (default) or ``medical``, the kind of images the predictor scores
    (MoECLIP smooths and scores them per domain). To build the same predictor in another
    process, send its :class:`ScorerSpec` there."""
    spec = ScorerSpec(
        method=method, checkpoint=None if checkpoint is None else str(checkpoint), backbone=backbone, weights=weights,
        image_size=image_size, method_config=method_config, cache_dir=cache_dir, device=device, precision=precision,
        compile=compile, class_name=class_name, class_names_file=None if class_names_file is None else str(class_names_file),
        activation=activation, domain=domain,
    )
    return spec.build_predictor()
