"""`zsad` command line: predict, test, demo, data (and, with the trainable methods, train,
benchmark and analyze)."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated, Callable, List

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel

from ..backbone import WeightsUnavailableError, is_random_weights
from ..data.cli import data_app
from ..checkpoints import CheckpointError
from ..fileio import OutputExistsError
from ..imageio import ImageReadError
from . import options as opt

app = typer.Typer(
    help="Zero-shot anomaly detection with CLIP: a score and a heat map per image, for categories never seen in training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Generate or inspect data sets.")

EXIT_BAD_INPUT = 2
err_console = Console(stderr=True)
console = Console()


def friendly_errors(command: Callable) -> Callable:
    """Turn the errors a user can fix into one clear line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (WeightsUnavailableError, CheckpointError, OutputExistsError, ImageReadError, FileNotFoundError, ValueError) as error:
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def warn_if_random(weights_description: str) -> None:
    if is_random_weights(weights_description):
        err_console.print(
            Panel(
                "The CLIP backbone has RANDOM weights. Scores, maps and metrics are a pipeline check, "
                "not a result. Use --weights openai (or a local weight file) for real detection.",
                title="RANDOM WEIGHTS",
                style="bold yellow",
            )
        )


def run_metadata(detector) -> dict:
    """What every output file records about the model that produced it."""
    described = detector.backbone.describe()
    return {
        "method": detector.name,
        "backbone": described["model_name"],
        "weights": described["weights"],
        "image_size": described["image_size"],
        "pipeline_check": described["random_weights"],
    }


def load_predictor(method, checkpoint, config, backbone, weights, image_size, cache_dir, device, precision, class_name, class_names):
    """The predictor the shared model options describe (method from the option, the
    recipe, or the checkpoint; the training-free baseline when nothing names one)."""
    from ..api import load
    from ..recipes import load_recipe

    quiet_random_warning()
    recipe = load_recipe(config)
    predictor = load(
        method or recipe.method or ("zeroshot" if checkpoint is None else None),
        checkpoint, backbone, weights, image_size, device, class_name, class_names, precision,
        str(cache_dir) if cache_dir else None, recipe.method_config or None,
    )
    warn_if_random(predictor.detector.backbone.weights_description)
    return predictor


def quiet_random_warning() -> None:
    # The CLI shows its own panel; the library's warning would repeat it.
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")


@app.command()
@friendly_errors
def predict(
    images: Annotated[List[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: opt.Out,
    method: opt.Method = None,
    checkpoint: opt.Checkpoint = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Score at or above which an image is labelled anomalous; also the level of the contour drawn on the overlays.")] = 0.5,
    class_name: opt.ClassName = None,
    class_names: opt.ClassNamesFile = None,
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = None,
    cache_dir: opt.CacheDir = None,
    config: opt.ConfigFile = None,
    device: opt.Device = "auto",
    precision: opt.Precision = "fp32",
    batch_size: opt.BatchSize = 8,
    num_workers: Annotated[int, typer.Option(min=0, help="Threads that decode images while the model runs (0 = none).")] = 0,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Score your own images: per image an overlay PNG and a 16-bit raw map, plus
    scores.csv and scores.json. Unreadable files are reported and skipped (exit status 2)."""
    from ..api import iter_image_files
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..engine.prediction import predict_files

    paths = iter_image_files(images, IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(map(str, images))}")
    predictor = load_predictor(
        method, checkpoint, config, backbone, weights, image_size, cache_dir, device, precision, class_name, class_names
    )
    summary = predict_files(
        predictor, paths, out, threshold, class_name=None, batch_size=batch_size, overwrite=overwrite,
        show_progress=not quiet, meta=run_metadata(predictor.detector), num_workers=num_workers,
    )
    scored = [row for row in summary.rows if not row["error"]]
    flagged = sum(row["label"] for row in scored)
    console.print(f"{len(scored)} images scored, {flagged} at or above {threshold}; results in {out}")
    for row in summary.rows:
        if row["error"]:
            err_console.print(f"[red]could not read[/] {row['path']}: {row['error']}")
    if summary.n_errors:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
@friendly_errors
def test(
    data: opt.DataSpec,
    out: opt.Out,
    method: opt.Method = None,
    checkpoint: opt.Checkpoint = None,
    classes: opt.Classes = None,
    save_maps: Annotated[int, typer.Option(min=0, help="Write this many comparison panels (image | overlay | ground truth) per class into OUT/maps.")] = 0,
    score_normalisation: Annotated[str, typer.Option(help="`none`, or `per-class-minmax`: rescale scores over each class's whole test set (transductive, as the MoECLIP authors' code does; for comparison only).")] = "none",
    class_name: opt.ClassName = None,
    class_names: opt.ClassNamesFile = None,
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = None,
    cache_dir: opt.CacheDir = None,
    config: opt.ConfigFile = None,
    device: opt.Device = "auto",
    precision: opt.Precision = "fp32",
    batch_size: opt.BatchSize = 8,
    num_workers: opt.NumWorkers = 0,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Evaluate on a labelled data set: metrics.json and metrics.md (per class and mean)."""
    from ..engine.testing import run_test

    predictor = load_predictor(
        method, checkpoint, config, backbone, weights, image_size, cache_dir, device, precision, class_name, class_names
    )
    result = run_test(
        predictor, data, out, classes=classes.split(",") if classes else None, batch_size=batch_size,
        num_workers=num_workers, save_maps=save_maps, score_normalisation=score_normalisation,
        overwrite=overwrite, show_progress=not quiet, meta=run_metadata(predictor.detector),
    )
    console.print(Markdown(result.markdown))
    for error in result.errors:
        err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
    if result.errors:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the generated data and all results.")] = Path("zsad-demo"),
    image_size: Annotated[int, typer.Option(help="Input side for the tiny model (patch grid: side // 8).")] = 128,
    epochs: Annotated[int, typer.Option(min=1, help="MoECLIP training epochs on the generated training categories.")] = 2,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Offline end-to-end run with the tiny random-weight model (no download): generate
    data, evaluate the baseline, train MoECLIP briefly and evaluate it on unseen
    categories, predict. Its numbers are a pipeline check, not a result."""
    from ..demo import run_demo

    quiet_random_warning()
    run_demo(out, image_size=image_size, device=device, overwrite=overwrite, show_progress=not quiet, console=console, epochs=epochs)


def _register_commands() -> None:
    from . import analysis, benchmark, training

    training.register(app)
    benchmark.register(app)
    analysis.register(app)


_register_commands()
