"""`zsad analyze`: analyses of a trained model (the experts of any method that routes) and
the training curves of runs (training loss and convergence; PromptMoE's auxiliary losses)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..data.spec import check_data_spec
from ..errors import InvalidInputError
from ..plurals import counted
from . import options as opt
from .console import EXIT_BAD_INPUT, console, err_console
from .model_loading import load_predictor

DataSpecs = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="KIND:PATH of a data set to analyse (repeat for several; their test split is used). Kinds: {data_kinds}. "
        "Optional for a method with expert prompts (the t-SNE needs no data).",
    ),
]


def experts(
    out: opt.Out,
    model: opt.ModelOptions,
    data: DataSpecs = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated categories to keep in each data set that has them (default: "
                                                        "all).")] = None,
    max_images: Annotated[Optional[int], typer.Option(min=1, help="Analyse at most this many images per data set, spread evenly over "
                                                                  "it (default: all).")] = None,
    selection_maps: Annotated[int, typer.Option(min=0, help="Draw patch-selection maps for this many first images per data set.")] = 4,
    layer: Annotated[Optional[str], typer.Option(help="Routed layer (block) of the patch statistics (Tab. 14) (default: the third routed "
                                                      "block, 18 on ViT-L).")] = None,
    tsne_seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=2**32 - 1,
            help="random_state of the t-SNE of the expert prompts (same seed, same picture; from its PCA start the "
            "embedding hardly depends on it).",
        ),
    ] = 0,
    perplexity: Annotated[
        float | None,
        typer.Option(help="t-SNE perplexity, below the number of expert prompts (default: min(30, (N - 1) / 3) for N prompts)."),
    ] = None,
    batch_size: opt.BatchSize = 8,
    num_workers: opt.NumWorkers = 0,
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """What the experts of a routed method do. Token routing (e.g. MoECLIP): patch-selection
    maps, inter-expert cosine similarity, expert utilisation per data set and the gradient /
    contrast / entropy of the patches each expert takes (MoECLIP Fig. 3, 5, 9, 10, 12-15,
    Tab. 14; index page OUT/analysis.md). Image routing (e.g. PromptMoE's prompt pools): how
    often each expert of each pool is chosen per data set and layer (PromptMoE Fig. 6;
    OUT/expert_activation.csv and .png; --selection-maps and --layer do not apply).
    Expert prompts (PromptMoE), with or without --data: a t-SNE of each expert prompt's mean
    token, one panel per layer in one joint embedding (Fig. 8; OUT/expert_tsne.csv, .png,
    .json), and each pool's mean pairwise cosine distance in the token space
    (OUT/expert_dispersion.csv), which checks "normal converging, abnormal diverging"."""
    for spec in data or []:  # checked before torch is imported
        check_data_spec(spec)
    from ..analysis.activation import routes_per_image
    from ..analysis.prompt_tsne import dispersion_report, expert_tsne, tsne_files, write_expert_tsne
    from ..fileio import check_can_write

    predictor = load_predictor(model)
    prompts = predictor.detector.expert_prompts()
    name = predictor.detector.name
    if not data and not prompts:
        raise InvalidInputError(
            f"'{name}' has no expert prompts to embed (the t-SNE is PromptMoE's Fig. 8); its expert analyses need --data KIND:PATH"
        )
    meta = {**predictor.detector.provenance(), "checkpoint": None if model.checkpoint is None else str(model.checkpoint)}
    if prompts:
        check_can_write(tsne_files(out), overwrite)
    else:
        console.print(f"No t-SNE of expert prompts: '{name}' has no learned expert prompts (PromptMoE's Fig. 8 needs prompt pools).")
    # Expert prompts without a router (static prompts) have nothing to route per data set.
    routed_data = bool(data) and (not prompts or routes_per_image(predictor.detector, predictor.device))
    if data and not routed_data:
        console.print(f"No per-data-set analyses: '{name}' with these settings reports no routing (static prompts); --data is not used.")
    skipped_images = False
    if routed_data:
        skipped_images = _analyze_data(
            predictor, data, out, meta, classes, max_images, selection_maps, layer, batch_size, num_workers, overwrite, quiet
        )
    if prompts:
        result = expert_tsne(prompts, seed=tsne_seed, perplexity=perplexity)
        written = write_expert_tsne(result, out, meta, overwrite=overwrite)
        console.print(
            f"t-SNE of {counted(len(result.rows), 'expert prompt')} (perplexity {result.perplexity:g}, seed {tsne_seed}): "
            f"{', '.join(str(path) for path in written)}",
            soft_wrap=True,
        )
        console.print(dispersion_report(result.dispersion), soft_wrap=True)
    if skipped_images:
        raise typer.Exit(EXIT_BAD_INPUT)


def _analyze_data(
    predictor, data, out, meta, classes, max_images, selection_maps, layer, batch_size, num_workers, overwrite, quiet
) -> bool:
    """The per-data-set expert analyses (routing per image or per token); whether images
    were skipped as unreadable (listed on stderr)."""
    from ..analysis.activation import analyze_expert_activation, routes_per_image
    from ..analysis.run import analyze_experts, load_analysis_data

    analysis_data = load_analysis_data(
        data, predictor.image_size, classes=[name.strip() for name in classes.split(",")] if classes else None, max_images=max_images
    )
    if routes_per_image(predictor.detector, predictor.device):
        routed = analyze_expert_activation(
            predictor, analysis_data, out, batch_size=batch_size, num_workers=num_workers, overwrite=overwrite,
            show_progress=not quiet, meta=meta,
        )
        console.print(f"{counted(len(routed.written), 'file')} written: {', '.join(str(path) for path in routed.written)}")
        for error in routed.errors:
            err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
        return bool(routed.errors)
    result = analyze_experts(
        predictor,
        analysis_data,
        out,
        statistics_block=layer,
        selection_count=selection_maps,
        batch_size=batch_size,
        num_workers=num_workers,
        overwrite=overwrite,
        show_progress=not quiet,
        meta=meta,
    )
    images = result.analysis.images()
    console.print(f"{counted(images, 'image')} analysed, {counted(len(result.written), 'file')} written; index: {out / 'analysis.md'}")
    for error in result.errors:
        err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
    return bool(result.errors)


class LossAxis(str, Enum):
    step = "step"
    epoch = "epoch"


def losses(
    run: Annotated[List[Path], typer.Option("--run", help="A `zsad train` output folder, of any method (repeat to compare runs, e.g. "
                                                          "moeclip-single-expert and moeclip; the first is the reference of the "
                                                          "convergence ratios).")],
    out: opt.Out,
    loss: Annotated[str, typer.Option(help="The train_log.csv column plotted as the training loss and used for convergence "
                                           "(`total`: the weighted sum the optimiser minimised).")] = "total",
    smooth_steps: Annotated[int, typer.Option(min=1, help="Smoothing window N in optimiser steps: the smoothed loss at step s is the "
                                                          "mean of the values logged at steps s - N + 1 .. s (a run's first steps "
                                                          "average what is logged so far; 1: no smoothing).")] = 50,
    tolerance: Annotated[float, typer.Option(min=0.0, help="The convergence level is the highest final smoothed loss among the runs "
                                                           "(the slowest run's end) times (1 + this); 0.05 = 5 %.")] = 0.05,
    level: Annotated[Optional[float], typer.Option(help="Use this convergence level of the smoothed loss instead (then --tolerance "
                                                        "is not used); a run that never gets there is 'not reached'.")] = None,
    x_axis: Annotated[LossAxis, typer.Option(help="x axis of training_loss.png: optimiser step, or epoch (the n rows of epoch e at "
                                                  "e - 1 + j / n).")] = LossAxis.step,
    overwrite: opt.Overwrite = False,
) -> None:
    """Training curves of one or more runs: every run's training loss in one figure and how
    fast each converges relative to the first (MoECLIP Fig. 8); for PromptMoE runs also
    the unweighted auxiliary losses and the monitored image AUROC (PromptMoE Fig. 7).

    Convergence: the first step at which a run's smoothed loss is <= a common level (by
    default the highest final smoothed loss x (1 + --tolerance)); each run's steps divided
    by the first run's ("B needs 1.30x the steps of A"), or 'not reached'. The MoECLIP paper
    does not define its "1.3x faster"; this is zsad's definition.

    Writes OUT/training_loss.png, training_loss.csv (the values drawn) and convergence.md;
    with PromptMoE runs OUT/auxiliary_losses.png and .csv (labelled by folder and beta, the
    L_decouple weight from config.json; dashed: beta = 0); and OUT/monitor_auroc.csv when a
    run was trained with `zsad train --monitor`."""
    from ..analysis.convergence import convergence_lines
    from ..analysis.training_curves import CURVE_NOTE, training_curves

    result = training_curves(
        run, out, overwrite=overwrite, loss=loss, smoothing_steps=smooth_steps, tolerance=tolerance, level=level,
        x_axis=x_axis.value,
    )
    console.print(f"Written: {', '.join(str(path) for path in result.written)}", soft_wrap=True)
    for line in convergence_lines(result.convergence, loss):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    if result.batch_size_note:
        console.print(result.batch_size_note, soft_wrap=True)
    if result.without_auxiliary:
        console.print(
            f"No auxiliary losses (PromptMoE's L_balance / L_decouple) in {', '.join(result.without_auxiliary)}: "
            f"training loss only for {'it' if len(result.without_auxiliary) == 1 else 'them'}.",
            soft_wrap=True,
        )
    if any(curves.auroc for curves in result.runs if curves.losses):
        console.print(CURVE_NOTE)
    monitored_alone = [curves.label for curves in result.runs if curves.auroc and not curves.losses]
    if monitored_alone:
        console.print(
            f"The monitored AUROC of {', '.join(monitored_alone)} is in monitor_auroc.csv only (each run's own "
            "monitor_curve.png draws it).",
            soft_wrap=True,
        )
    with_auxiliary = len(result.runs) - len(result.without_auxiliary)
    without = [label for label in result.without_monitor if label not in result.without_auxiliary]
    if with_auxiliary and without:
        console.print(
            f"No monitor.csv in {', '.join(without)} (trained without --monitor): losses only for "
            f"{'it' if len(without) == 1 else 'them'}.",
            soft_wrap=True,
        )
