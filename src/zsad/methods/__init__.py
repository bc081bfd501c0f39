"""Method registry: a name -> the module and class that implement it."""
from __future__ import annotations

from importlib import import_module
from typing import Any

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


def build_method(name: str, backbone: ClipBackbone, config: dict[str, Any] | MethodConfig | None = None) -> AnomalyDetector:
    """Instantiate method ``name`` on ``backbone`` with a config (dict or dataclass)."""
    cls = method_class(name)
    if not isinstance(config, MethodConfig):
        config = cls.config_class.from_dict(config)
    return cls(backbone, config)


__all__ = ["AnomalyDetector", "DetectorOutput", "MethodConfig", "available_methods", "build_method", "method_class"]
