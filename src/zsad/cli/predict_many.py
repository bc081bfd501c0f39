"""`zsad predict-many`: `zsad predict` for millions of images, on Ray Data."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..errors import InvalidInputError
from ..plurals import counted
from . import calibrate as cal
from . import options as opt
from .console import EXIT_BAD_INPUT, EXIT_INTERRUPTED, console, err_console
from .model_loading import check_model_options, load_arguments, load_predictor

PathsFrom = Annotated[
    Optional[List[Path]],
    typer.Option(
        "--paths-from",
        help="A file listing images: .txt (one path per line), .csv or .parquet (the --path-column column); relative "
        "paths are taken from the file's folder. Repeat for several files.",
    ),
]
PathColumn = Annotated[str, typer.Option(help="Column of the image paths in a .csv or .parquet --paths-from file.")]
Actors = Annotated[
    Optional[int],
    typer.Option(
        min=1,
        help="Scoring actors, each holding one model: default one per visible GPU with --device cuda/auto on a GPU "
        "machine, else 1 (CPU actors share the cores).",
    ),
]
RayAddress = Annotated[
    Optional[str],
    typer.Option(
        help="Join a running Ray cluster (e.g. ray://head:10001 or auto); zsad must be installed on its nodes. "
        "Default: start Ray on this machine for the run."
    ),
]
ChunkSize = Annotated[
    int,
    typer.Option(min=1, help="Images per manifest chunk and per output shard: the unit that a killed run can lose and --resume redoes."),
]


def predict_many(
    out: opt.Out,
    model: opt.ModelOptions,
    images: Annotated[Optional[List[Path]], typer.Argument(help="Image files and/or folders (searched recursively).")] = None,
    paths_from: PathsFrom = None,
    path_column: PathColumn = "path",
    threshold: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            max=1.0,
            help="Score at or above which an image is labelled anomalous (the label column; the overlays' contour) "
            "(default: 0.5, or the --calibration file's).",
        ),
    ] = None,
    calibration: cal.CalibrationFile = None,
    batch_size: opt.BatchSize = 8,
    actors: Actors = None,
    ray_address: RayAddress = None,
    chunk_size: ChunkSize = 1024,
    save_maps: Annotated[bool, typer.Option(help="Write each image's raw map (16-bit PNG) under OUT/maps/.")] = False,
    save_overlays: Annotated[bool, typer.Option(help="Write each image's readable overlay under OUT/overlays/.")] = False,
    overwrite: opt.Overwrite = False,
    resume: Annotated[
        bool,
        typer.Option(
            help="Finish an interrupted run in --out: chunks with a shard are kept, the others are scored (the same model, "
            "words and threshold required)."
        ),
    ] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Score very many images with a Ray Data pipeline (decoding in CPU tasks, scoring in
    an actor pool: one model per GPU, or CPU actors), on this machine or a Ray cluster.
    Results are Parquet shards in OUT/scores/ (path, score, label, p_value, error, map,
    overlay), one per chunk of --chunk-size images, written as chunks complete: a killed
    run loses only the chunks in flight, and --resume scores the rest. Unreadable files
    get a row with the reason (exit status 2). Needs the `scale` extra: pip install "zsad[scale]"."""
    # Everything that needs no model is checked first (before torch is imported).
    _require_scale_extra()
    if not images and not paths_from:
        raise InvalidInputError("name images or folders, or a list of paths with --paths-from")
    check_model_options(model)
    import functools

    from ..api import load
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..engine.path_manifest import PathList
    from ..engine.predict_many import ManyInterrupted
    from ..engine.predict_many import predict_many as run
    from ..engine.prediction import calibration_identity
    from ..engine.ray_scoring import OutputSettings
    from ..methods.base import refuse_set_method

    settings = _scale_settings(model.device, actors, batch_size, ray_address)
    checked = load_predictor(opt.ModelOptions(**{**vars(model), "device": "cpu"}))  # fails here, not in the actors
    refuse_set_method(checked.detector, "`zsad predict-many` (its actors score images batch by batch; use `zsad predict --set-size`)")
    provenance = checked.detector.provenance()
    meta: dict = {}
    entry, threshold = cal.for_run(calibration, threshold, checked, meta)
    identity = {**checked.identity(), "calibration": calibration_identity(entry), "threshold": threshold}
    image_size = checked.image_size
    del checked
    arguments = {**load_arguments(model), "device": "cuda" if settings.gpus_per_actor else "cpu"}
    output = OutputSettings(threshold=threshold, save_maps=save_maps, save_overlays=save_overlays, metadata=provenance, calibration=entry)
    try:
        summary = run(
            images or [],
            [PathList(file, path_column) for file in paths_from or []],
            out,
            functools.partial(load, **arguments),
            identity,
            image_size,
            IMAGE_SUFFIXES,
            class_name=None,
            settings=settings,
            output=output,
            chunk_size=chunk_size,
            overwrite=overwrite,
            resume=resume,
            show_progress=not quiet,
            on_manifest=lambda manifest: console.print(
                f"{counted(manifest.n_images, 'image')} in {counted(len(manifest.chunks), 'chunk')}; "
                f"{counted(settings.actors, 'scoring actor')} on {'GPUs' if settings.gpus_per_actor else 'CPUs'}",
                highlight=False,
            ),
        )
    except ManyInterrupted as stop:
        err_console.print(
            f"interrupted: {stop.done} of {stop.total} images are in complete shards in {out / 'scores'}. "
            "To score the rest, run the same command with --resume.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    kept = f" ({summary.n_previous} kept from the earlier run)" if summary.n_previous else ""
    scored = summary.n_images - summary.n_errors
    console.print(f"{scored} of {counted(summary.n_images, 'image')} scored{kept}; shards in {out / 'scores'}", highlight=False)
    if summary.n_skipped or summary.n_not_images:
        err_console.print(
            f"not scored: {counted(summary.n_skipped, 'entry', 'entries')} of the input folders (listed with the reason in "
            f"{out / 'skipped.csv'}) and {counted(summary.n_not_images, 'file')} without an image extension",
            highlight=False,
        )
    if summary.n_errors:
        err_console.print(
            f"[red]{counted(summary.n_errors, 'file')} could not be read[/]: their rows in the shards give the reason", highlight=False
        )
        raise typer.Exit(EXIT_BAD_INPUT)


def _require_scale_extra() -> None:
    import importlib.util

    missing = [name for name in ("ray", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidInputError(f'zsad predict-many needs {" and ".join(missing)}: pip install "zsad[scale]"')


def _scale_settings(device: str, actors: int | None, batch_size: int, ray_address: str | None):
    """GPU actors (one GPU each) when the device is CUDA, or auto on a machine with GPUs;
    else CPU actors sharing this machine's cores, half a core left for decoding."""
    import torch

    from ..engine.ray_scoring import ScaleSettings
    from ..engine.runtime import available_cpus

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        return ScaleSettings(
            actors=actors or max(1, torch.cuda.devicecounted()),
            gpus_per_actor=1.0,
            cpus_per_actor=1.0,
            batch_size=batch_size,
            ray_address=ray_address,
        )
    actors = actors or 1
    decode_cpus = 0.5
    cpus_per_actor = max(0.25, (available_cpus() - decode_cpus) / actors) if ray_address is None else 1.0
    return ScaleSettings(
        actors=actors,
        gpus_per_actor=0.0,
        cpus_per_actor=cpus_per_actor,
        decode_cpus=decode_cpus,
        batch_size=batch_size,
        ray_address=ray_address,
    )
