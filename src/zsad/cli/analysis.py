"""`zsad analyze`: analyses of a trained model (the experts of any method that routes) and
the auxiliary-loss curves of training runs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..data.spec import check_data_spec
from ..plurals import counted
from . import options as opt
from .console import EXIT_BAD_INPUT, console, err_console
from .model_loading import load_predictor

DataSpecs = Annotated[
    List[str],
    typer.Option(
        "--data",
        help="KIND:PATH of a data set to analyse (repeat for several; their test split is used). "
        "Kinds: {data_kinds}.",
    ),
]


def experts(
    data: DataSpecs,
    out: opt.Out,
    model: opt.ModelOptions,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated categories to keep in each data set that has them (default: "
                                                        "all).")] = None,
    max_images: Annotated[Optional[int], typer.Option(min=1, help="Analyse at most this many images per data set, spread evenly over "
                                                                  "it (default: all).")] = None,
    selection_maps: Annotated[int, typer.Option(min=0, help="Draw patch-selection maps for this many first images per data set.")] = 4,
    layer: Annotated[Optional[str], typer.Option(help="Routed layer (block) of the patch statistics (Tab. 14) (default: the third routed "
                                                      "block, 18 on ViT-L).")] = None,
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
    OUT/expert_activation.csv and .png; --selection-maps and --layer do not apply)."""
    for spec in data:  # checked before torch is imported
        check_data_spec(spec)
    from ..analysis.activation import analyze_expert_activation, routes_per_image
    from ..analysis.run import analyze_experts, load_analysis_data

    predictor = load_predictor(model)
    analysis_data = load_analysis_data(
        data, predictor.image_size, classes=[name.strip() for name in classes.split(",")] if classes else None, max_images=max_images
    )
    meta = {**predictor.detector.provenance(), "checkpoint": None if model.checkpoint is None else str(model.checkpoint)}
    if routes_per_image(predictor.detector, predictor.device):
        routed = analyze_expert_activation(
            predictor, analysis_data, out, batch_size=batch_size, num_workers=num_workers, overwrite=overwrite,
            show_progress=not quiet, meta=meta,
        )
        console.print(f"{counted(len(routed.written), 'file')} written: {', '.join(str(path) for path in routed.written)}")
        for error in routed.errors:
            err_console.print(f"[red]skipped[/] {error['path']}: {error['error']}")
        if routed.errors:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
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
    if result.errors:
        raise typer.Exit(EXIT_BAD_INPUT)


def losses(
    run: Annotated[List[Path], typer.Option("--run", help="A `zsad train` output folder (repeat to compare runs, e.g. with and without "
                                                          "L_decouple).")],
    out: opt.Out,
    overwrite: opt.Overwrite = False,
) -> None:
    """Training curves of the unweighted auxiliary losses (L_balance, L_decouple) of
    PromptMoE runs, from their train_log.csv (PromptMoE Fig. 7): OUT/auxiliary_losses.csv
    and .png."""
    from ..analysis.activation import auxiliary_loss_curves

    written = auxiliary_loss_curves(run, out, overwrite=overwrite)
    console.print(f"Written: {', '.join(str(path) for path in written)}")

