"""`zsad train`: train a method on auxiliary data sets.

Settings come in layers, each overriding the one before (``zsad.recipes.resolve_settings``):
the engine's defaults, the method's paper recipe, the overlay or file of ``--config``, the
stored config of the run being resumed (``--resume``), then the options given on the
command line. config.json records where each value came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape

from ..data.spec import check_data_spec
from ..errors import InvalidInputError
from ..plurals import counted
from . import checks
from . import options as opt
from .console import EXIT_INTERRUPTED, console, err_console
from .model_loading import check_config_file, is_trainable, panel_replaces_random_warning, warn_if_random

if TYPE_CHECKING:  # imported where used: the command line starts without torch
    from ..engine.train_config import TrainingConfig
    from ..recipes import Recipe
    from ..text import ClassNames

SPLITS = ("test", "all")

TrainData = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="KIND:PATH[,KIND:PATH...]: the auxiliary data sets (concatenated). Each contributes its labelled "
        "test split (normal and anomalous images with masks), as in the papers. Kinds: {data_kinds}. "
        "When resuming: the run's data unless given.",
    ),
]
TrainMethod = Annotated[
    Optional[str],
    typer.Option(
        "--method",
        "-m",
        help="Trainable method: {trainable_methods}. Alone, it trains the method's paper recipe (`zsad recipes`). "
        "Default: the --config recipe's, or the resumed run's.",
    ),
]


@dataclass
class RunSettings:
    """Everything `zsad train` needs to build the detector and call fit; sources: where
    each setting came from (recorded in config.json)."""

    method: str
    method_config: dict[str, Any]
    model_name: str | None
    weights: str | None
    image_size: int | None
    data: list[str]
    training: TrainingConfig
    sources: dict[str, str] = field(default_factory=dict)
    activation: str | None = None


def absolute_spec(spec: str) -> str:
    """``kind:relative/path`` -> ``kind:/absolute/path``, so a run resumes from anywhere."""
    from ..data import parse_data_spec

    kind, path = parse_data_spec(spec)
    return f"{kind}:{path.resolve()}"


def resolve_settings(
    recipe: Recipe,
    stored: dict[str, Any] | None,
    method: str | None,
    data: str | None,
    model_name: str | None,
    weights: str | None,
    image_size: int | None,
    training_overrides: dict[str, Any],
    activation: str | None = None,
) -> RunSettings:
    """The run's settings by ``zsad.recipes.resolve_settings`` (engine defaults < method
    recipe < --config < resumed run < command line). Command-line values that are None
    were not given and do not override."""
    from ..recipes import resolve_settings as merge

    specs = [absolute_spec(part) for part in data.split(",") if part.strip()] if data else None
    resolved = merge(
        method, recipe, stored,
        {
            "training": training_overrides,
            "backbone": {"model_name": model_name, "weights": weights, "image_size": image_size, "activation": activation},
        },
        specs,
    )
    if not resolved.data:
        raise InvalidInputError("name the training data: --data KIND:PATH[,KIND:PATH...]")
    return RunSettings(
        method=resolved.method,
        method_config=resolved.method_config,
        model_name=resolved.backbone["model_name"],
        weights=resolved.backbone["weights"],
        image_size=resolved.backbone["image_size"],
        data=resolved.data,
        training=resolved.training_config(),
        sources=resolved.sources,
        activation=resolved.backbone["activation"],
    )


def train(
    out: opt.Out,
    training: opt.TrainingOptions,
    data: TrainData = None,
    method: TrainMethod = None,
    config: opt.ConfigFile = None,
    split: Annotated[
        Optional[str],
        typer.Option(
            callback=checks.one_of(*SPLITS),
            help="`test`: each data set's labelled test split (the papers' protocol); `all`: also its train/good images (default: test).",
        ),
    ] = None,
    activation_checkpointing: Annotated[
        Optional[bool],
        typer.Option(
            "--activation-checkpointing/--no-activation-checkpointing",
            help="Recompute frozen activations in the backward pass: less GPU memory, slower (default: off).",
        ),
    ] = None,
    cache_images: Annotated[
        Optional[bool],
        typer.Option(
            "--cache-images/--no-cache-images",
            help="Keep the decoded, resized images "
            "in memory after the first read when the set fits in a quarter of the free memory (default: on).",
        ),
    ] = None,
    device: opt.Device = "auto",
    num_workers: Annotated[
        Optional[int],
        typer.Option(
            min=0,
            help="Data-loading worker processes per training process (default: the free CPU cores, at most 8; 0 = in the main process).",
        ),
    ] = None,
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = None,
    activation: opt.Activation = None,
    cache_dir: opt.CacheDir = None,
    class_names: opt.ClassNamesFile = None,
    monitor: Annotated[
        Optional[str],
        typer.Option(
            "--monitor",
            help="KIND:PATH: evaluate on this data set after each epoch and draw its image AUROC per epoch (monitor.csv, "
            "monitor_curve.png; PromptMoE Fig. 7). For the curve only: it selects nothing, the model stays the last "
            "epoch's. Kinds: {data_kinds}.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out from its last completed epoch; its stored settings are the "
            "base; changing them is refused except more --epochs, --num-workers and --activation-checkpointing."
        ),
    ] = False,
    resume_epoch: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Continue from the end of this epoch instead of the last one "
            "(e.g. the newest intact epoch when the last checkpoint is damaged); "
            "implies --resume.",
        ),
    ] = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train a method's adapters on auxiliary data sets (the CLIP backbone stays frozen).

    Writes OUT/model.safetensors (the last epoch), per-epoch checkpoints, config.json,
    train_log.csv, loss_curves.png and training_summary.md. Runs on several GPUs with
    `torchrun --no-python --nproc-per-node N zsad train ...`.
    """
    # Everything that needs no model is checked first (before torch is imported).
    for spec in [*(data or "").split(","), monitor or ""]:
        if spec.strip():
            check_data_spec(spec.strip())
    if method is not None and not is_trainable(method):
        raise InvalidInputError(f"method '{method}' has no trainable parameters: it needs no training")
    check_config_file(config)
    from ..recipes import load_recipe

    recipe = load_recipe(config)
    if method is None and recipe.method is not None and not is_trainable(recipe.method):
        raise InvalidInputError(f"method '{recipe.method}' has no trainable parameters: it needs no training")
    from ..engine.run_folder import read_run_config
    from ..text import ClassNames

    resume = resume or resume_epoch is not None
    stored = read_run_config(out) if resume else None
    if resume and stored is None:
        err_console.print(f"--resume: {escape(str(out))} holds no earlier run (no config.json); starting a new run there.", soft_wrap=True)
        resume = False
    settings = resolve_settings(
        recipe, stored, method, data, backbone, weights, image_size,
        {
            **training.given(),
            "include_train_split": None if split is None else split == "all",
            "activation_checkpointing": activation_checkpointing,
            "cache_images": cache_images,
            "num_workers": num_workers,
        },
        activation,
    )
    names = ClassNames.load(class_names)
    if stored is not None and class_names is None:
        # The resumed run keeps the prompt words it was started with.
        names = ClassNames(table={**names.table, **stored.get("class_names", {})})
    _run(settings, out, names, device, cache_dir, resume, overwrite, quiet, resume_epoch, monitor)


def interrupted_message(out: Path) -> str:
    """What a Ctrl-C during `zsad train` leaves in ``out``, and how to continue."""
    from ..engine.run_folder import epoch_checkpoints, train_state_path

    complete = [epoch for epoch, path in epoch_checkpoints(out) if train_state_path(path).is_file()]
    if not complete:
        return f"interrupted before the first epoch ended: nothing to resume in {out}; run the same command again to start over."
    return (
        f"interrupted: {counted(len(complete), 'epoch')} complete in {out} (the last: {complete[-1]}). To continue, "
        f"run `zsad train --out {out} --resume` (the run's stored settings are used)."
    )


def _run(
    settings: RunSettings,
    out: Path,
    class_names: ClassNames,
    device: str,
    cache_dir: Path | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    resume_epoch: int | None = None,
    monitor: str | None = None,
) -> None:
    """Build the detector (initialised from the training seed) and train it; rank 0 reports where the model is."""
    from ..api import build_detector
    from ..engine.distributed import is_main_process
    from ..engine.monitor import MONITOR_NOTE, dataset_monitor
    from ..engine.runtime import resolve_device
    from ..engine.training import fit
    from ..methods import method_class

    if not method_class(settings.method).trainable:
        raise InvalidInputError(f"method '{settings.method}' has no trainable parameters: it needs no training")

    main = is_main_process()
    with panel_replaces_random_warning():
        detector = build_detector(
            settings.method,
            backbone=settings.model_name,
            weights=settings.weights,
            image_size=settings.image_size,
            method_config=settings.method_config,
            cache_dir=str(cache_dir) if cache_dir else None,
            for_training=True,
            seed=settings.training.seed,
            activation=settings.activation,
        )
    if main:
        warn_if_random(detector.backbone.random_weights)
    torch_device = resolve_device(device)
    measure = dataset_monitor(absolute_spec(monitor), class_names, torch_device, settings.training.batch_size) if monitor else None
    try:
        result = fit(
            detector,
            settings.data,
            out,
            settings.training,
            class_names,
            torch_device,
            resume=resume,
            overwrite=overwrite,
            show_progress=not quiet,
            resume_epoch=resume_epoch,
            notify=lambda text: err_console.print(escape(text), soft_wrap=True),
            sources=settings.sources,
            monitor=measure,
        )
    except KeyboardInterrupt:
        if main:
            err_console.print(escape(interrupted_message(out)), highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if main:
        console.print(
            f"Trained {escape(settings.method)}: {counted(result.epochs_completed, 'epoch')}, {counted(result.global_step, 'step')}, "
            f"{result.wall_time_s:.0f} s. Model: {escape(str(result.model_path))}",
            soft_wrap=True,
        )
        if measure is not None:
            console.print(f"{MONITOR_NOTE} Curve: {escape(str(out / 'monitor_curve.png'))}", soft_wrap=True)
        if result.unreadable:
            skipped = counted(len(result.unreadable), "unreadable image")
            err_console.print(f"[yellow]{skipped} skipped[/] (listed in training_summary.md)")
        console.print("Test it on a data set it has never seen:")
        command = f"  zsad test --checkpoint {out} --data KIND:PATH --out {out / 'test'}"
        console.print(escape(command), highlight=False, soft_wrap=True)

