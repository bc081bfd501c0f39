"""The `zsad` app: its options, and the table of its commands.

A new command is a function in its own module of this package, added below with
``add_command`` (which gives it the filled help texts, the error handler and its option
groups). Nothing heavy (torch, open_clip) is imported here or by the command modules at
import time: help, --version and argument errors come at once; the commands import what
they use.
"""
from __future__ import annotations

from typing import Annotated

import typer

from . import analysis, benchmark, calibrate, data, demo, export, predict, predict_many, recipes, serve, testing, training
from .registration import add_command, new_group

SUMMARY = "Zero-shot anomaly detection with CLIP: a score and a heat map per image, for categories never seen in training."

app = typer.Typer(
    help=SUMMARY,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help and errors: readable at 80 columns, nothing cut with "…"
)


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"zsad {__version__}")
        raise typer.Exit()


@app.callback(help=SUMMARY)
def main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """The options of `zsad` itself; the work is done by its commands."""


add_command(app, predict.predict)
add_command(app, testing.test, name="test")
add_command(app, demo.demo)
add_command(app, training.train)
add_command(app, benchmark.benchmark)
add_command(app, serve.serve)
add_command(app, export.export)
add_command(app, calibrate.calibrate)
add_command(app, predict_many.predict_many, name="predict-many")

analyze_app = new_group("Analyses of a trained model.")
add_command(analyze_app, analysis.experts)
add_command(analyze_app, analysis.losses)
app.add_typer(analyze_app, name="analyze")

recipes_app = new_group("The bundled paper recipes and ablation overlays.", default=recipes.listing)
add_command(recipes_app, recipes.list_recipes, name="list")
add_command(recipes_app, recipes.show)
app.add_typer(recipes_app, name="recipes")

data_app = new_group("Inspect data sets (any KIND:PATH spec) and generate synthetic MVTec/VisA-layout data.")
add_command(data_app, data.synth)
add_command(data_app, data.info)
app.add_typer(data_app, name="data", help="Generate or inspect data sets.")
