"""`zsad` command line: predict, test, demo, data (and, with the trainable methods, train,
benchmark and analyze)."""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import Annotated, Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel

from ..data.cli import data_app
from ..settings import SAMPLE_SCORES, SCORE_NORMALISATIONS
from . import calibrate as cal
from . import checks
from . import fewshot as fs
from . import options as opt

# Nothing heavy (torch, open_clip) is imported here or by the command modules at import
# time: help, --version and argument errors come at once; the commands import what they use.
app = typer.Typer(
    help="Zero-shot anomaly detection with CLIP: a score and a heat map per image, for categories never seen in training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and errors: readable at 80 columns, nothing cut with "…"
)
app.add_typer(data_app, name="data", help="Generate or inspect data sets.")


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"zsad {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Zero-shot anomaly detection with CLIP: a score and a heat map per image, for categories never seen in training."""

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)
err_console = Console(stderr=True)
console = Console()


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix (imported when one is being handled, not before)."""
    from ..clip_weights import WeightsUnavailableError
    from ..checkpoints import CheckpointError
    from ..engine.training import TrainingError
    from ..fileio import OutputExistsError
    from ..imageio import ImageReadError
    from ..output_lock import OutputFolderError

    return (
        WeightsUnavailableError, CheckpointError, OutputExistsError, OutputFolderError, ImageReadError, TrainingError,
        FileNotFoundError, ValueError,
    )


def friendly_errors(command: Callable) -> Callable:
    """The one error handler of every command: the errors a user can fix become one clear
    line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as error:  # evaluated only when something was raised
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


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


def load_arguments(options: opt.ModelOptions, compile: str = "off") -> dict:
    """The keyword arguments of :func:`zsad.api.load` that the shared model options
    describe (method from the option, the recipe, or the checkpoint; the training-free
    baseline when nothing names one). Refuses an untrained trainable method unless
    --allow-untrained; a picklable description, so another process can build the same
    predictor."""
    from ..methods import method_class
    from ..recipes import DEFAULT, load_recipe, resolve_settings

    recipe = load_recipe(options.config)
    method = options.method or recipe.method or ("zeroshot" if options.checkpoint is None else None)
    method_config = None
    activation = options.activation
    if recipe.method is not None:  # the overlay laid over its method's recipe; only what they set
        merged = resolve_settings(method, recipe)
        method_config = {
            key: value for key, value in merged.method_config.items() if merged.sources[f"method_config.{key}"] != DEFAULT
        } or None
        activation = activation or merged.backbone["activation"]
    untrained = options.checkpoint is None and method_class(method).trainable
    if untrained and not options.allow_untrained:
        raise ValueError(
            f"--method {method} needs a trained model: pass --checkpoint RUN_DIR (a `zsad train` output folder or "
            "one of its .safetensors files). To run it with untrained adapters anyway (a pipeline check, its "
            "scores mean nothing), add --allow-untrained."
        )
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
    from ..api import load
    from ..methods import method_class

    arguments = load_arguments(options, compile)
    untrained = options.checkpoint is None and method_class(arguments["method"]).trainable
    with panel_replaces_random_warning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is trainable but no checkpoint was given")  # the panel below says it
        predictor = load(**arguments)
    warn_if_random(predictor.detector.backbone.random_weights)
    if untrained:
        err_console.print(Panel(f"--method {arguments['method']} runs with UNTRAINED adapters (--allow-untrained): a pipeline check, not a result.", title="UNTRAINED", style="bold yellow"))
    return predictor


def compile_meta(compile: str) -> dict[str, str]:
    """What output files record about --compile: how the model ran, not what it is (a
    runtime setting, absent when off)."""
    return {} if compile == "off" else {"compile": compile}


@app.command(cls=opt.LazyHelpCommand)
@friendly_errors
@opt.option_group("model", opt.ModelOptions)
def predict(
    images: Annotated[List[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    out: opt.Out,
    model: opt.ModelOptions,
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Score at or above which an image is labelled anomalous; also the level of the contour drawn on the overlays (default: 0.5, or the --calibration file's).")] = None,
    calibration: cal.CalibrationFile = None,
    batch_size: opt.BatchSize = 8,
    num_workers: Annotated[int, typer.Option(min=0, help="Threads that decode images while the model runs (0 = none).")] = 0,
    reference: fs.Reference = None,
    fusion_weight: fs.FusionWeight = 0.5,
    set_size: opt.SetSize = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Run a model exported by `zsad export` with onnxruntime instead of torch (same outputs).")] = None,
    compile: opt.Compile = "off",
    overwrite: opt.Overwrite = False,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted run in --out: images that have a row in its scores.csv are kept, the rest are scored (same model and threshold required).")] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Score your own images: per image an overlay PNG and a 16-bit raw map, plus
    scores.csv and scores.json. Unreadable files are reported and skipped (exit status 2).
    Ctrl-C keeps every finished row; --resume finishes the rest (exit status 130)."""
    from ..data.layouts.common import IMAGE_SUFFIXES
    from ..discovery import find_images
    from ..engine.prediction import PredictionInterrupted, predict_files

    found = find_images(images, IMAGE_SUFFIXES, exclude=[out])
    for line in found.skipped_summary():
        err_console.print(f"[yellow]skipped[/] {line}", highlight=False)
    if not found.paths:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(map(str, images))}")
    if onnx is not None:
        from .export import load_onnx_predictor

        if compile != "off":
            raise ValueError("--compile applies to torch models, not to --onnx (onnxruntime runs the exported graph)")
        predictor, meta = load_onnx_predictor(onnx, model, reference)
        warn_if_random(bool(meta.get("pipeline_check")))
    else:
        predictor = load_predictor(model, compile)
        meta = {**predictor.detector.provenance(), **compile_meta(compile)}
    from ..methods.base import scores_sets as method_scores_sets

    scores_sets = onnx is None and method_scores_sets(predictor.detector)
    if set_size is not None and not scores_sets:
        raise ValueError("--set-size applies to methods that score sets of images (--method musc)")
    if scores_sets and calibration is not None:
        raise ValueError(f"--method {predictor.detector.name} gives set-relative scores: --calibration does not apply")
    entry, threshold = cal.for_run(calibration, threshold, predictor, meta, predictor.meta if onnx is not None else None, reference)
    if reference is not None and not scores_sets:
        predictor = fs.with_reference_folder(predictor, reference, fusion_weight, meta)
    if not scores_sets and onnx is None and model.method is None and model.checkpoint is None and model.config is None:
        from ..engine.set_scoring import SET_METHOD_HINT, SUGGEST_SET_METHOD_FROM

        if len(found.paths) >= SUGGEST_SET_METHOD_FROM:
            err_console.print(SET_METHOD_HINT.format(n=len(found.paths)), highlight=False, soft_wrap=True)
    try:
        if scores_sets:
            summary = _predict_sets(predictor, found.paths, out, threshold, model, set_size, reference, batch_size, overwrite, resume, quiet, meta)
        else:
            summary = predict_files(
                predictor, found.paths, out, threshold, class_name=None, batch_size=batch_size, overwrite=overwrite,
                show_progress=not quiet, meta=meta, num_workers=num_workers, resume=resume, calibration=entry,
            )
    except PredictionInterrupted as stop:
        err_console.print(
            f"interrupted: {stop.done} of {stop.total} images done; their rows are in {out / 'scores.csv'} and "
            f"{out / 'scores.json'}. To score the other {stop.total - stop.done}, run the same command with --resume.",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    scored = [row for row in summary.rows if not row["error"]]
    flagged = sum(row["label"] for row in scored)
    kept = f" ({summary.n_previous} kept from the earlier run)" if summary.n_previous else ""
    console.print(f"{len(scored)} images scored{kept}, {flagged} at or above {threshold:.6g}; results in {out}", highlight=False)
    for row in summary.rows:
        if row["error"]:
            err_console.print(f"[red]could not read[/] {row['path']}: {row['error']}", highlight=False)
    if found.skipped:
        err_console.print(f"{len(found.skipped)} entries in the input folders were not scored (listed above).", highlight=False)
    if summary.n_errors:
        raise typer.Exit(EXIT_BAD_INPUT)


def _predict_sets(predictor, paths, out, threshold, model, set_size, reference, batch_size, overwrite, resume, quiet, meta):
    """`zsad predict` for a set method (musc): one set per --class-names category folder
    (else all the images), --reference images joining every set."""
    from ..engine.fewshot import reference_paths
    from ..engine.set_scoring import group_by_class_folder, predict_sets

    groups = group_by_class_folder(paths, predictor.class_names.table if model.class_names else ())
    references = reference_paths(reference) if reference is not None else []
    return predict_sets(predictor, groups, out, threshold, set_size, references, batch_size, overwrite, resume, not quiet, meta)


@app.command(cls=opt.LazyHelpCommand)
@friendly_errors
@opt.option_group("model", opt.ModelOptions)
def test(
    data: opt.DataSpec,
    out: opt.Out,
    model: opt.ModelOptions,
    classes: opt.Classes = None,
    save_maps: Annotated[int, typer.Option(min=0, help="Write this many comparison panels (image | overlay | ground truth) per class into OUT/maps.")] = 0,
    score_normalisation: Annotated[str, typer.Option(callback=checks.one_of(*SCORE_NORMALISATIONS), help="`none`, or `per-class-minmax`: rescale scores over each class's whole test set (transductive, as the MoECLIP authors' code does; for comparison only).")] = "none",
    sample_score: Annotated[str, typer.Option(callback=checks.one_of(*SAMPLE_SCORES), help="`image`: the image metrics score each image; `max-over-views`: each physical sample (Real-IAD's 5 camera views) by the max over its views' scores, labelled anomalous when any view is. Pixel metrics stay per image.")] = "image",
    batch_size: opt.BatchSize = 8,
    num_workers: opt.NumWorkers = 0,
    set_size: opt.SetSize = None,
    shots: fs.Shots = 0,
    shot_seed: fs.ShotSeeds = None,
    fusion_weight: fs.FusionWeight = 0.5,
    compile: opt.Compile = "off",
    calibration: cal.CalibrationFile = None,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Evaluate on a labelled data set: metrics.json and metrics.md (per class and mean).
    With --shots K, few-shot mode: K references per class, mean ± std over --shot-seed.
    With --calibration, also the false-positive rate and recall at the calibrated thresholds."""
    from ..engine.testing import run_test

    predictor = load_predictor(model, compile)
    if calibration is not None and shots:
        raise ValueError("--calibration applies to the zero-shot scores, not to --shots (references change the scores)")
    calibrated = cal.load_for_model(calibration, cal.predictor_identity(predictor), None) if calibration else None
    if shots:
        from ..engine.fewshot import fewshot_markdown, run_fewshot_test
        from ..methods.fewshot import FewShotSettings

        if save_maps:
            raise ValueError("--save-maps is not available with --shots (several seeds give several maps per image)")
        if sample_score != "image":
            raise ValueError("--sample-score is not available with --shots")
        report = run_fewshot_test(
            predictor, data, out, shots, shot_seed or [0], FewShotSettings(weight=fusion_weight),
            classes=classes.split(",") if classes else None, batch_size=batch_size, num_workers=num_workers,
            score_normalisation=score_normalisation, overwrite=overwrite, show_progress=not quiet,
            meta=predictor.detector.provenance(),
        )
        console.print(Markdown(fewshot_markdown(report)))
        for error in report["errors"]:
            err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
        if report["errors"]:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    if shot_seed:
        raise ValueError("--shot-seed needs --shots K (K >= 1)")
    result = run_test(
        predictor, data, out, classes=classes.split(",") if classes else None, batch_size=batch_size,
        num_workers=num_workers, save_maps=save_maps, score_normalisation=score_normalisation,
        overwrite=overwrite, show_progress=not quiet, meta={**predictor.detector.provenance(), **compile_meta(compile)},
        calibration=calibrated, calibration_path=calibration, sample_score=sample_score, domain=model.domain,
        set_size=set_size,
    )
    console.print(Markdown(result.markdown))
    for error in result.errors:
        err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
    if result.errors:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command(cls=opt.LazyHelpCommand)
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the generated data and all results.")] = Path("zsad-demo"),
    image_size: Annotated[int, typer.Option(min=opt.MIN_IMAGE_SIZE, help="Input side for the tiny model (patch grid: side // 8).")] = 128,
    epochs: Annotated[int, typer.Option(min=1, help="MoECLIP training epochs on the generated training categories.")] = 2,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Offline end-to-end run with the tiny random-weight model (no download): generate
    data, evaluate the baseline, train MoECLIP briefly and evaluate it on unseen
    categories, predict. Its numbers are a pipeline check, not a result."""
    from ..demo import run_demo

    with panel_replaces_random_warning():
        run_demo(out, image_size=image_size, device=device, overwrite=overwrite, show_progress=not quiet, console=console, epochs=epochs)


def _register_commands() -> None:
    from . import analysis, benchmark, export, predict_many, recipes, serve, training

    training.register(app)
    recipes.register(app)
    benchmark.register(app)
    analysis.register(app)
    serve.register(app)
    export.register(app)
    cal.register(app)
    predict_many.register(app)


_register_commands()
