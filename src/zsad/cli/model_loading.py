"""Loading the model the shared options describe, and the panels that say when its
outputs are a pipeline check (random weights, untrained adapters)."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

from rich.panel import Panel

from ..errors import InvalidInputError, MissingInputError, RandomWeightsWarning, UntrainedAdaptersWarning
from ..method_names import BUILTIN_METHODS
from . import options as opt
from .console import err_console


def warn_if_random(random_weights: bool) -> None:
    """The CLI's panel for a random-weight backbone (it replaces the library's warning)."""
    if random_weights:
        err_console.print(
            Panel(
                "The CLIP backbone has RANDOM weights. Scores, maps and metrics are a pipeline check, "
                "not a result. Use --weights openai (or a local weight file) for real detection.",
                title="RANDOM WEIGHTS",
                style="bold yellow",
            )
        )


@contextlib.contextmanager
def panel_replaces_random_warning() -> Iterator[None]:
    """Silence the library's random-weights warning for the duration of a call (the CLI
    shows its own panel); the process's warning filters are restored afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield


def is_trainable(method: str) -> bool:
    """From the name table when the method is bundled (no torch), else from the registry."""
    if method in BUILTIN_METHODS:
        return BUILTIN_METHODS[method]
    from ..methods import method_class

    return method_class(method).trainable


RECIPE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def check_config_file(config: str | None) -> None:
    """Refuse a --config that names a recipe file (a path or a YAML/JSON name) that does not
    exist, before torch is imported (a bundled recipe's name is a plain word; reading the
    bundled list imports the method registry)."""
    if config is None:
        return
    path = Path(config).expanduser()
    if (path.suffix.lower() in RECIPE_FILE_SUFFIXES or len(path.parts) > 1) and not path.is_file():
        raise MissingInputError(
            f"config file not found: {config} (a bundled recipe is named without a folder or suffix; see `zsad recipes`)"
        )


def check_model_options(options: opt.ModelOptions):
    """The checks of the model options, so that a missing checkpoint or class-names file,
    an unknown recipe, or a trainable method without a checkpoint, is refused before the
    model loads (before torch is imported when no --config is given: reading a recipe
    imports the method registry). Returns the recipe (None: no --config), the method
    (None: the checkpoint's) and whether the method's adapters are untrained."""
    checkpoint = options.checkpoint
    if checkpoint is not None and not str(checkpoint).startswith("hf-hub:") and not checkpoint.expanduser().exists():
        raise MissingInputError(f"checkpoint not found: {checkpoint}")
    if options.class_names is not None and not options.class_names.is_file():
        raise MissingInputError(f"class-names file not found: {options.class_names}")
    check_config_file(options.config)
    recipe = None
    if options.config is not None:
        from ..recipes import load_recipe

        recipe = load_recipe(options.config)
    method = options.method or (recipe.method if recipe is not None else None) or ("zeroshot" if checkpoint is None else None)
    untrained = checkpoint is None and is_trainable(method)
    if untrained and not options.allow_untrained:
        raise InvalidInputError(
            f"--method {method} needs a trained model: pass --checkpoint RUN_DIR (a `zsad train` output folder or "
            "one of its .safetensors files). To run it with untrained adapters anyway (a pipeline check, its "
            "scores mean nothing), add --allow-untrained."
        )
    return recipe, method, untrained


def load_arguments(options: opt.ModelOptions, compile: str = "off") -> dict:
    """The keyword arguments of :func:`zsad.api.load` that the shared model options
    describe (method from the option, the recipe, or the checkpoint; the training-free
    baseline when nothing names one), after :func:`check_model_options`. A --config overlay
    is laid over its method's recipe and only what they set is passed. A picklable
    description, so another process can build the same predictor."""
    recipe, method, _ = check_model_options(options)
    method_config = None
    activation = options.activation
    if recipe is not None and method is not None:  # laid over the method's recipe; only what they set
        from ..recipes import DEFAULT, resolve_settings

        merged = resolve_settings(method, recipe)
        method_config = {
            key: value for key, value in merged.method_config.items() if merged.sources[f"method_config.{key}"] != DEFAULT
        } or None
        activation = activation or merged.backbone["activation"]
    elif recipe is not None:  # the checkpoint names the method: the file's settings as they are
        method_config = recipe.method_config or None
        activation = activation or recipe.backbone.get("activation")
    return dict(
        method=method, checkpoint=options.checkpoint, backbone=options.backbone, weights=options.weights,
        image_size=options.image_size, device=options.device, class_name=options.class_name,
        class_names_file=options.class_names, precision=options.precision,
        cache_dir=str(options.cache_dir) if options.cache_dir else None, method_config=method_config,
        compile=compile, activation=activation, domain=options.domain,
    )


def load_predictor(options: opt.ModelOptions, compile: str = "off"):
    """The predictor the shared model options describe (see :func:`load_arguments`), its
    inference call under ``--compile``."""
    _, method, untrained = check_model_options(options)
    arguments = load_arguments(options, compile)
    from ..api import load

    with panel_replaces_random_warning(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedAdaptersWarning)  # the panel below says it
        predictor = load(**arguments)
    warn_if_random(predictor.detector.backbone.random_weights)
    if untrained:
        err_console.print(
            Panel(
                f"--method {method} runs with UNTRAINED adapters (--allow-untrained): a pipeline check, not a result.",
                title="UNTRAINED",
                style="bold yellow",
            )
        )
    return predictor


def compile_meta(compile: str) -> dict[str, str]:
    """What output files record about --compile: how the model ran, not what it is (a
    runtime setting, absent when off)."""
    return {} if compile == "off" else {"compile": compile}
