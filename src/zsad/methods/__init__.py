"""Method registry. A method is one module or package under ``zsad.methods`` (or an
installed plugin named by a ``zsad.methods`` entry point) whose import registers its
class with ``@register_method``; the class's ``name`` is the registry key."""
from __future__ import annotations

import pkgutil
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

import torch

from ..backbone import ClipBackbone
from ..errors import InvalidInputError
from ..method_names import ENTRY_POINT_GROUP
from .base import AnomalyDetector, DetectorOutput, MethodConfig

# Modules of this package that hold the kit, not a method.
_KIT_MODULES = frozenset({"base", "build"})
_REGISTRY: dict[str, type[AnomalyDetector]] = {}


def register_method(cls: type[AnomalyDetector]) -> type[AnomalyDetector]:
    """Class decorator: make ``cls`` available under ``cls.name``. Registering the same
    class again (a module imported twice) is harmless; another class with the same
    name is refused."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name` to be registered")
    if not (isinstance(cls, type) and issubclass(cls, AnomalyDetector)):
        raise TypeError(f"{cls!r} is not an AnomalyDetector")
    known = _REGISTRY.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"method name '{name}' is taken by {known.__module__}.{known.__qualname__}")
    _REGISTRY[name] = cls
    return cls


@cache
def _discover() -> None:
    """Import every method module of this package and every installed plugin once."""
    for module in pkgutil.iter_modules(__path__, f"{__name__}."):
        if module.name.rsplit(".", 1)[-1] not in _KIT_MODULES:
            import_module(module.name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def available_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[AnomalyDetector]:
    _discover()
    if name not in _REGISTRY:
        raise InvalidInputError(f"unknown method '{name}'; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


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


__all__ = [
    "DEFAULT_INIT_SEED",
    "AnomalyDetector",
    "DetectorOutput",
    "MethodConfig",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
