"""`zsad test`: evaluate on a labelled data set (zero-shot, or few-shot with --shots)."""
from __future__ import annotations

from typing import Annotated

import typer

from ..data.spec import check_data_spec
from ..errors import InvalidInputError
from ..settings import SAMPLE_SCORES, SCORE_NORMALISATIONS
from . import calibrate as cal
from . import checks
from . import fewshot as fs
from . import options as opt
from .console import EXIT_BAD_INPUT, console, err_console
from .model_loading import compile_meta, load_predictor
from .tables import print_markdown


def test(
    data: opt.DataSpec,
    out: opt.Out,
    model: opt.ModelOptions,
    classes: opt.Classes = None,
    save_maps: Annotated[int, typer.Option(min=0, help="Write this many comparison panels (image | overlay | ground truth) per class "
                                                       "into OUT/maps.")] = 0,
    score_normalisation: Annotated[str, typer.Option(callback=checks.one_of(*SCORE_NORMALISATIONS), help="`none`, or `per-class-minmax`: "
            "rescale scores over each class's whole test set (transductive, as the MoECLIP authors' "
            "code does; for comparison only).")] = "none",
    sample_score: Annotated[
        str,
        typer.Option(
            callback=checks.one_of(*SAMPLE_SCORES),
            help="`image`: the image metrics score each image; `max-over-views`: each physical sample (Real-IAD's 5 "
            "camera views) by the max over its views' scores, labelled anomalous when any view is. Pixel metrics stay "
            "per image.",
        ),
    ] = "image",
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
    # Everything that needs no model is checked first: a mistake is reported at once.
    if shots and save_maps:
        raise InvalidInputError("--save-maps is not available with --shots (several seeds give several maps per image)")
    if shot_seed and not shots:
        raise InvalidInputError("--shot-seed needs --shots K (K >= 1)")
    if shots and sample_score != "image":
        raise InvalidInputError("--sample-score is not available with --shots")
    if calibration is not None and shots:
        raise InvalidInputError("--calibration applies to the zero-shot scores, not to --shots (references change the scores)")
    check_data_spec(data)
    from ..engine.testing import run_test

    predictor = load_predictor(model, compile)
    calibrated = cal.load_for_model(calibration, cal.predictor_identity(predictor), None) if calibration else None
    if shots:
        from ..engine.fewshot import fewshot_markdown, run_fewshot_test
        from ..methods.fewshot import FewShotSettings

        report = run_fewshot_test(
            predictor, data, out, shots, shot_seed or [0], FewShotSettings(weight=fusion_weight),
            classes=classes.split(",") if classes else None, batch_size=batch_size, num_workers=num_workers,
            score_normalisation=score_normalisation, overwrite=overwrite, show_progress=not quiet,
            meta=predictor.detector.provenance(),
        )
        print_markdown(console, fewshot_markdown(report))
        for error in report["errors"]:
            err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
        if report["errors"]:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    result = run_test(
        predictor, data, out, classes=classes.split(",") if classes else None, batch_size=batch_size,
        num_workers=num_workers, save_maps=save_maps, score_normalisation=score_normalisation,
        overwrite=overwrite, show_progress=not quiet, meta={**predictor.detector.provenance(), **compile_meta(compile)},
        calibration=calibrated, calibration_path=calibration, sample_score=sample_score, domain=model.domain,
        set_size=set_size,
    )
    print_markdown(console, result.markdown)
    for error in result.errors:
        err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
    if result.errors:
        raise typer.Exit(EXIT_BAD_INPUT)
