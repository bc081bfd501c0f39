"""Method registry: a name -> the module and class that implement it."""
from __future__ import annotations

from importlib import import_module
from typing import Any

import torch

from ..backbone import ClipBackbone
from .base import AnomalyDetector, DetectorOutput, MethodConfig

_METHOD_LOCATIONS: dict[str, str] = {
    "zeroshot": "zsad.methods.zeroshot:ZeroShotDetector",
    "moeclip": "zsad.methods.moeclip.model:MoEClipDetector",
}


def available_methods() -> list[str]:
    return sorted(_METHOD_LOCATIONS)


def method_class(name: str) -> type[AnomalyDetector]:
    if name not in _METHOD_LOCATIONS:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(available_methods())}")
    module_name, class_name = _METHOD_LOCATIONS[name].split(":")
    return getattr(import_module(module_name), class_name)


DEFAULT_INIT_SEED = 0


def build_method(
    name: str,
    backbone: ClipBackbone,
    config: dict[str, Any] | MethodConfig | None = None,
    seed: int = DEFAULT_INIT_SEED,
) -> AnomalyDetector:
    """Instantiate method ``name`` on ``backbone`` with a config (dict or dataclass).

    The method's own modules (routers, projections...) are initialised from torch's CPU
    generator seeded with ``seed`` inside a forked RNG scope: the same (config, seed) gives
    the same initial state whatever ran before, and the caller's RNG state is untouched.
    """
    cls = method_class(name)
    if not isinstance(config, MethodConfig):
        config = cls.config_class.from_dict(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(backbone, config)


__all__ = ["DEFAULT_INIT_SEED", "AnomalyDetector", "DetectorOutput", "MethodConfig", "available_methods", "build_method", "method_class"]
