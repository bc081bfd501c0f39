"""Python API: build a detector (fresh or from a checkpoint) and predict on images."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .engine.compilation import check_compile_mode
from .engine.predictor import Predictor, Prediction
from .engine.run_folder import resolve_checkpoint
from .engine.runtime import resolve_device
from .methods.build import build_detector, full_config
from .text import ClassNames


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
    A checkpoint may be a file or a training run's folder (its final or latest model).
    compile: ``off``, ``default``, ``max-autotune`` or ``reduce-overhead`` (CUDA graphs, CUDA
    only): the inference call under ``torch.compile`` (the first batches compile).
    activation: the backbone's MLP activation, ``quick_gelu`` or ``gelu`` (None = as the
    weights were trained). domain: ``industrial`` (default) or ``medical``, the kind of
    images the predictor scores (MoECLIP smooths and scores them per domain)."""
    checkpoint = None if checkpoint is None else resolve_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    check_compile_mode(compile, torch_device)  # before the model is built
    model = build_detector(method, checkpoint, backbone, weights, image_size, method_config, cache_dir, activation=activation)
    if domain is not None:
        model.use_domain(domain)
    return Predictor(model, torch_device, ClassNames.load(class_names_file, class_name), precision, compile)
