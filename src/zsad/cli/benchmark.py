"""`zsad benchmark`: train once, test every listed set, compare with the paper."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..data.spec import check_data_spec
from . import options as opt
from .console import console
from .model_loading import warn_if_random
from .tables import print_markdown


def benchmark(
    test: Annotated[
        str,
        typer.Option(
            "--test",
            help="KIND:PATH[,KIND:PATH...]: the data sets to evaluate on (e.g. mvtec:...,btad:...,kvasir:...). Kinds: {data_kinds}.",
        ),
    ],
    out: opt.Out,
    training_options: opt.TrainingOptions,
    train: Annotated[
        Optional[str],
        typer.Option(
            "--train",
            help="The auxiliary data set, KIND:PATH (the papers: visa:PATH); not for training-free methods "
            "({training_free_methods}). Kinds: {data_kinds}.",
        ),
    ] = None,
    method: opt.Method = None,
    config: opt.ConfigFile = None,
    swap: Annotated[
        bool,
        typer.Option(
            help="Also train on the first --test set and evaluate that model on the --train set (the papers' MVTec-AD -> VisA row)."
        ),
    ] = False,
    class_names: opt.ClassNamesFile = None,
    backbone: opt.Backbone = None,
    weights: opt.Weights = None,
    image_size: opt.ImageSize = None,
    activation: opt.Activation = None,
    cache_dir: opt.CacheDir = None,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """The papers' protocol: train on --train (training-free methods: no --train), test on
    every --test set, and write benchmark.md / benchmark.json with our numbers beside
    the published ones."""
    tests = [part.strip() for part in test.split(",") if part.strip()]
    for spec in [*([train] if train is not None else []), *tests]:  # checked before torch is imported
        check_data_spec(spec)
    from ..clip_weights import is_random_weights
    from ..engine.benchmark import BenchmarkPlan, run_benchmark
    from ..engine.train_config import TrainingConfig
    from ..recipes import load_recipe
    from ..text import ClassNames

    recipe = load_recipe(config)
    chosen = method or recipe.method or "moeclip"
    training = TrainingConfig.from_dict({**recipe.training, **training_options.given()})
    plan = BenchmarkPlan(
        method=chosen, method_config=recipe.method_config, backbone=backbone, weights=weights,
        image_size=image_size, cache_dir=str(cache_dir) if cache_dir else None, train=train,
        tests=tests, training=training, swap=swap, activation=activation or recipe.backbone.get("activation"),
    )
    warn_if_random(is_random_weights(weights or "openai"))
    summary = run_benchmark(plan, out, ClassNames.load(class_names), device=device, overwrite=overwrite,
                            show_progress=not quiet, say=lambda text: console.print(f"[bold]>[/] {text}"))
    print_markdown(console, (out / "benchmark.md").read_text())
    console.print(f"Written: {out / 'benchmark.md'}, {out / 'benchmark.json'}")
    if any(row.get("n_errors") for row in summary["results"].values()):
        raise typer.Exit(2)
