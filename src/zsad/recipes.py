"""Recipes: each method's paper recipe, its ablation overlays, and the one merge of settings.

A method package ships its recipes as package data in ``recipes/`` beside its code
(``zsad/methods/promptmoe/recipes/*.yaml``; a single-module method such as ``zeroshot``
keeps them in ``zsad/methods/recipes/``). The file named after the method
(``promptmoe.yaml``) is the method's paper recipe; every other file is an overlay that
names only its switches, based on that recipe, and the paper row it reproduces.

A recipe file holds::

    description: what it is
    method: promptmoe
    paper:                      # optional: the published row this recipe reproduces
      table: "PromptMoE Tab. 2, Static Prompt"
      results: {mvtec: {image_auroc: 0.917, pixel_aupro: 0.820}, visa: {...}}
    method_config: {...}        # the method's settings (an overlay: only its switches)
    training: {...}             # TrainingConfig fields

A method recipe without ``paper.results`` is compared with the method's Tab. 1
(``resources/paper_results.json``).

:func:`resolve_settings` is the one place settings are merged, in this order, each layer
overriding the ones before: engine defaults < method recipe < overlay or ``--config`` file
< a resumed run's config < command-line flags. It records where every value came from.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from .engine.benchmark import paper_results
from .engine.train_config import TrainingConfig
from .errors import InvalidInputError, MissingInputError
from .methods import available_methods, method_class

RECIPE_DIR = "recipes"
_RECIPE_KEYS = {"method", "method_config", "training", "description", "paper", "backbone"}
# What a recipe may say about the backbone (the rest comes from the command line).
_BACKBONE_KEYS = {"activation"}
# The sections whose values merge key by key; the others are replaced whole.
SECTIONS = ("method_config", "training", "backbone")
DEFAULT = "default"
COMMAND_LINE = "command line"
RESUMED = "resumed run"


@dataclass(frozen=True)
class PaperRow:
    """The published numbers a recipe reproduces.

    table: where they are printed ("PromptMoE Tab. 2, Static Prompt").
    results: {data kind: {metric: fraction}}; the keys as in ``paper_results.json``.
    """

    table: str
    results: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "results": self.results}


@dataclass(frozen=True)
class Recipe:
    """One recipe file. name: its bundled name or its path; base: the method recipe an
    overlay is based on (None for a method's own recipe and for no recipe at all)."""

    name: str | None = None
    method: str | None = None
    method_config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: PaperRow | None = None
    backbone: dict[str, Any] = field(default_factory=dict)

    @property
    def is_method_recipe(self) -> bool:
        return self.method is not None and self.name == self.method

    def named_keys(self) -> list[str]:
        """The dotted keys this file sets (``method_config.fofs``, ``training.lr``)."""
        return [f"{section}.{key}" for section in SECTIONS for key in getattr(self, section)]


# ---------------------------------------------------------------- reading files


def _parse(text: str, origin: str, suffix: str, name: str) -> Recipe:
    try:
        values = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except Exception as error:
        raise InvalidInputError(f"cannot parse config {origin}: {error}") from error
    values = values or {}
    if not isinstance(values, dict):
        raise InvalidInputError(f"{origin} must be a mapping with keys {sorted(_RECIPE_KEYS)}")
    unknown = sorted(set(values) - _RECIPE_KEYS)
    if unknown:
        raise InvalidInputError(f"{origin}: unknown keys {unknown}; allowed: {sorted(_RECIPE_KEYS)}")
    for section in SECTIONS:
        if not isinstance(values.get(section) or {}, dict):
            raise InvalidInputError(f"{origin}: `{section}` must be a mapping of settings")
    backbone = dict(values.get("backbone") or {})
    if set(backbone) - _BACKBONE_KEYS:
        unknown_backbone = sorted(set(backbone) - _BACKBONE_KEYS)
        raise InvalidInputError(f"{origin}: unknown backbone keys {unknown_backbone}; allowed: {sorted(_BACKBONE_KEYS)}")
    return Recipe(
        name=name,
        backbone=backbone,
        method=values.get("method"),
        method_config=dict(values.get("method_config") or {}),
        training=dict(values.get("training") or {}),
        description=" ".join(str(values.get("description", "")).split()),
        paper=_paper_row(values.get("paper"), values.get("method"), name, origin),
    )


def _paper_row(values: Any, method: str | None, name: str, origin: str) -> PaperRow | None:
    """The ``paper:`` block; missing results of a method recipe, or of a recipe whose table
    is the method's Tab. 1, are that table's numbers (``paper_results.json``)."""
    if values is None:
        return None
    if not isinstance(values, dict) or "table" not in values:
        raise InvalidInputError(f"{origin}: `paper` must be a mapping with `table` and `results`")
    results = values.get("results")
    if results is None and method is not None and (name == method or str(values["table"]).endswith("Tab. 1")):
        results = paper_results(method)
    if not isinstance(results, dict):
        raise InvalidInputError(f"{origin}: `paper.results` must map data kinds to {{metric: fraction}}")
    return PaperRow(table=str(values["table"]), results={kind: dict(row) for kind, row in results.items()})


def _recipe_dirs() -> list[Traversable]:
    """The ``recipes/`` folder of every registered method's package, once each (a plugin
    method defined in a top-level module has no package, so no bundled recipes)."""
    folders: dict[str, Traversable] = {}
    for name in available_methods():
        module = method_class(name).__module__
        package = module if _is_package(module) else module.rpartition(".")[0]
        if not package:
            continue
        folder = resources.files(package) / RECIPE_DIR
        if folder.is_dir():
            folders.setdefault(package, folder)
    return list(folders.values())


def _is_package(module: str) -> bool:
    import sys

    return hasattr(sys.modules[module], "__path__")


def bundled_recipes() -> dict[str, Recipe]:
    """Every recipe shipped in a method package, by name (the file name without .yaml)."""
    found: dict[str, Recipe] = {}
    for folder in _recipe_dirs():
        for entry in sorted(folder.iterdir(), key=lambda item: item.name):
            if not entry.name.endswith(".yaml"):
                continue
            name = entry.name[: -len(".yaml")]
            if name in found:
                raise InvalidInputError(f"two bundled recipes are named {name!r}: rename one")
            found[name] = _parse(entry.read_text(encoding="utf-8"), f"bundled recipe {name}", ".yaml", name)
    return found


def method_recipe(method: str) -> Recipe:
    """The paper recipe of ``method`` (an empty recipe for a method that ships none)."""
    return bundled_recipes().get(method, Recipe(name=method, method=method))


def load_recipe(config: str | Path | None) -> Recipe:
    """``--config``: a bundled name (``promptmoe-static-prompt``), a YAML/JSON path, or
    None (no file: an empty recipe)."""
    if config is None:
        return Recipe()
    text = str(config)
    bundled = bundled_recipes()
    if text in bundled:
        return bundled[text]
    path = Path(config)
    if not path.is_file():
        known = ", ".join(sorted(bundled))
        raise MissingInputError(f"{text}: neither a recipe file nor a bundled recipe; bundled: {known} (see `zsad recipes`)")
    return _parse(path.read_text(encoding="utf-8"), str(path), path.suffix.lower(), str(path))


# ---------------------------------------------------------------- merging


@dataclass
class ResolvedSettings:
    """The merged settings of a run and where each came from.

    method, method_config (every field), training (every TrainingConfig field), backbone
    ({model_name, weights, image_size}, None = the library's default), data (KIND:PATH).
    sources: {dotted key: the layer that set it}, e.g. ``training.lr: recipe promptmoe``.
    recipe: the overlay / file given, else the method recipe; paper: the row it reproduces
    (None for a file or overlay that names none: no published number fits it).
    """

    method: str
    method_config: dict[str, Any]
    training: dict[str, Any]
    backbone: dict[str, Any]
    data: list[str]
    sources: dict[str, str]
    recipe: Recipe
    paper: PaperRow | None

    def training_config(self) -> TrainingConfig:
        return TrainingConfig.from_dict(self.training)

    def as_dict(self) -> dict[str, Any]:
        """The merged settings as a recipe-like mapping (``zsad recipes show``)."""
        return {
            "method": self.method,
            "paper": None if self.paper is None else self.paper.to_dict(),
            "method_config": self.method_config,
            "training": self.training,
            "backbone": self.backbone,
            "sources": self.sources,
        }


@dataclass
class _Merge:
    values: dict[str, Any] = field(default_factory=lambda: {section: {} for section in SECTIONS})
    sources: dict[str, str] = field(default_factory=dict)

    def apply(self, section: str, values: dict[str, Any], label: str, skip_none: bool = False) -> None:
        for key, value in values.items():
            if skip_none and value is None:
                continue
            self.values[section][key] = list(value) if isinstance(value, tuple) else value
            self.sources[f"{section}.{key}"] = label


def _label(recipe: Recipe) -> str:
    if recipe.is_method_recipe:
        return f"recipe {recipe.name}"
    return f"overlay {recipe.name}" if recipe.name in bundled_recipes() else f"config {recipe.name}"


def _stored_backbone(backbone: dict[str, Any]) -> dict[str, Any]:
    """A run's stored backbone as merge keys: a run config records the activation as
    ``quick_gelu`` (True / False; None = as the weights were trained)."""
    values = {key: backbone[key] for key in ("model_name", "weights", "image_size") if key in backbone}
    quick_gelu = backbone.get("quick_gelu")
    if quick_gelu is not None:
        values["activation"] = "quick_gelu" if quick_gelu else "gelu"
    return values


def resolve_settings(
    method: str | None = None,
    config: Recipe | None = None,
    stored: dict[str, Any] | None = None,
    command_line: dict[str, Any] | None = None,
    data: Iterable[str] | None = None,
) -> ResolvedSettings:
    """Merge engine defaults < method recipe < overlay / config file < resumed run <
    command line.

    method: ``--method`` (None: the config's, else the resumed run's). config: the
    ``--config`` recipe. stored: the resumed run's config.json. command_line: the given
    flags as {section: {key: value}} with sections ``training`` / ``backbone`` /
    ``method_config``; None values were not given. data: ``--data`` specs (None: the
    resumed run's). Raises InvalidInputError when no method is named or the names disagree.
    """
    config = config or Recipe()
    stored = stored or {}
    command_line = command_line or {}
    chosen = method or config.method or stored.get("method")
    if not chosen:
        raise InvalidInputError("name the method: --method NAME (or `method:` in the --config recipe)")
    if method and config.method and method != config.method:
        raise InvalidInputError(f"--method {method} contradicts --config {config.name}, a {config.method} recipe")
    cls = method_class(chosen)
    base = method_recipe(chosen)
    merge = _Merge()
    merge.apply("training", TrainingConfig().to_dict(), DEFAULT)
    merge.apply("method_config", cls.config_class().to_dict(), DEFAULT)
    merge.apply("backbone", {"model_name": None, "weights": None, "image_size": None, "activation": None}, DEFAULT)
    for layer in (base, config) if not config.is_method_recipe else (config,):
        if layer.method is None and layer.name is None:
            continue  # no --config
        merge.apply("method_config", layer.method_config, _label(layer))
        merge.apply("training", layer.training, _label(layer))
        merge.apply("backbone", layer.backbone, _label(layer))
    if stored and stored.get("method") == chosen:
        merge.apply("method_config", stored.get("method_config", {}), RESUMED)
    if stored:
        merge.apply("training", stored.get("training", {}), RESUMED)
        merge.apply("backbone", _stored_backbone(stored.get("backbone", {})), RESUMED)
    for section in SECTIONS:
        merge.apply(section, command_line.get(section, {}), COMMAND_LINE, skip_none=True)
    specs = list(data) if data else list(stored.get("data", []))
    if data:
        merge.sources["data"] = COMMAND_LINE
    elif specs:
        merge.sources["data"] = RESUMED
    merge.sources["method"] = COMMAND_LINE if method else (_label(config) if config.method else RESUMED)
    chosen_recipe = config if config.name is not None else base
    return ResolvedSettings(
        method=chosen,
        method_config=merge.values["method_config"],
        training=merge.values["training"],
        backbone=merge.values["backbone"],
        data=specs,
        sources=dict(sorted(merge.sources.items())),
        recipe=chosen_recipe,
        paper=chosen_recipe.paper,
    )
