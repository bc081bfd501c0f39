"""`zsad benchmark`: train once (or once per seed), test every listed set, compare with the
published row the recipe reproduces."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..data.spec import check_data_spec
from . import checks
from . import options as opt
from .console import console
from .model_loading import check_config_file, warn_if_random
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
    seeds: Annotated[
        Optional[str],
        typer.Option(
            "--seeds",
            help="Comma-separated training seeds, e.g. 0,1,2: train and test once per seed (OUT/seed-N/) and report "
            "mean ± std beside the paper (default: --seed, one run).",
        ),
    ] = None,
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
    every --test set, and write benchmark.md / benchmark.json with our numbers beside the
    published ones: the row of the --config overlay (an ablation's own row), else the
    method's Tab. 1."""
    # Everything that needs no model is checked first (before torch is imported).
    tests = [part.strip() for part in test.split(",") if part.strip()]
    for spec in [*([train] if train is not None else []), *tests]:
        check_data_spec(spec)
    seed_list = checks.seed_list(seeds)
    check_config_file(config)
    from ..clip_weights import is_random_weights
    from ..engine.benchmark import BenchmarkPlan, run_benchmark
    from ..recipes import load_recipe, resolve_settings
    from ..text import ClassNames

    recipe = load_recipe(config)
    settings = resolve_settings(
        method or (None if recipe.method else "moeclip"), recipe,
        command_line={"training": training_options.given(), "backbone": {"activation": activation}},
    )
    row = settings.paper
    plan = BenchmarkPlan(
        method=settings.method, method_config=settings.method_config, backbone=backbone, weights=weights,
        image_size=image_size, cache_dir=str(cache_dir) if cache_dir else None, train=train,
        tests=tests, training=settings.training_config(), swap=swap, paper=None if row is None else row.to_dict(),
        recipe=settings.recipe.name, seeds=seed_list, activation=settings.backbone["activation"],
    )
    if settings.recipe.is_method_recipe:
        plan.paper = None  # the method's Tab. 1 (also for a method that ships no recipe file)
    elif row is None:
        plan.paper = {"table": "no published row", "results": {}}
    warn_if_random(is_random_weights(weights or "openai"))
    summary = run_benchmark(plan, out, ClassNames.load(class_names), device=device, overwrite=overwrite,
                            show_progress=not quiet, say=lambda text: console.print(f"[bold]>[/] {text}"))
    print_markdown(console, (out / "benchmark.md").read_text())
    console.print(f"Written: {out / 'benchmark.md'}, {out / 'benchmark.json'}")
    if any(row.get("n_errors") for row in summary["results"].values()):
        raise typer.Exit(2)
