"""Recipe files (configs/*.yaml): which method, its config, and training settings."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidInputError, MissingInputError

_RECIPE_KEYS = {"method", "method_config", "training", "description", "backbone"}
# What a recipe may say about the backbone (the rest comes from the command line).
_BACKBONE_KEYS = {"activation"}


@dataclass(frozen=True)
class Recipe:
    method: str | None = None
    method_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    backbone: dict[str, Any] = field(default_factory=dict)


def load_recipe(path: str | Path | None) -> Recipe:
    """Read a YAML or JSON recipe; None -> an empty recipe (all defaults)."""
    if path is None:
        return Recipe()
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except Exception as error:
        raise InvalidInputError(f"cannot parse config {path}: {error}") from error
    values = values or {}
    if not isinstance(values, dict):
        raise InvalidInputError(f"{path} must be a mapping with keys {sorted(_RECIPE_KEYS)}")
    unknown = sorted(set(values) - _RECIPE_KEYS)
    if unknown:
        raise InvalidInputError(f"{path}: unknown keys {unknown}; allowed: {sorted(_RECIPE_KEYS)}")
    backbone = dict(values.get("backbone") or {})
    if set(backbone) - _BACKBONE_KEYS:
        raise InvalidInputError(
            f"{path}: unknown backbone keys {sorted(set(backbone) - _BACKBONE_KEYS)}; allowed: {sorted(_BACKBONE_KEYS)}"
        )
    return Recipe(
        backbone=backbone,
        method=values.get("method"),
        method_config=dict(values.get("method_config") or {}),
        training=dict(values.get("training") or {}),
        description=str(values.get("description", "")),
    )
