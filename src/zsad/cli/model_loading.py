"""Loading the model the shared options describe, and the panels that say when its
outputs are a pipeline check (random weights, untrained adapters)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from rich.panel import Panel

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
        warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
        yield


def load_predictor(options: opt.ModelOptions, compile: str = "off"):
    """The predictor the shared model options describe (method from the option, the
    recipe, or the checkpoint; the training-free baseline when nothing names one), its
    inference call under ``--compile``."""
    from ..api import load
    from ..methods import method_class
    from ..recipes import load_recipe

    recipe = load_recipe(options.config)
    method = options.method or recipe.method or ("zeroshot" if options.checkpoint is None else None)
    untrained = options.checkpoint is None and method_class(method).trainable
    if untrained and not options.allow_untrained:
        raise ValueError(
            f"--method {method} needs a trained model: pass --checkpoint RUN_DIR (a `zsad train` output folder or "
            "one of its .safetensors files). To run it with untrained adapters anyway (a pipeline check, its "
            "scores mean nothing), add --allow-untrained."
        )
    with panel_replaces_random_warning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is trainable but no checkpoint was given")  # the panel below says it
        predictor = load(
            method,
            options.checkpoint, options.backbone, options.weights, options.image_size, options.device,
            options.class_name, options.class_names, options.precision,
            str(options.cache_dir) if options.cache_dir else None, recipe.method_config or None, compile,
        )
    warn_if_random(predictor.detector.backbone.random_weights)
    if untrained:
        err_console.print(Panel(f"--method {method} runs with UNTRAINED adapters (--allow-untrained): a pipeline check, not a result.", title="UNTRAINED", style="bold yellow"))
    return predictor


def compile_meta(compile: str) -> dict[str, str]:
    """What output files record about --compile: how the model ran, not what it is (a
    runtime setting, absent when off)."""
    return {} if compile == "off" else {"compile": compile}
