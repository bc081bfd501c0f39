"""`zsad recipes`: the recipes bundled with the methods, and what one resolves to."""
from __future__ import annotations

from typing import Annotated

import typer

from .console import console

MethodFilter = Annotated[str | None, typer.Option("--method", "-m", help="Only this method's recipes: {methods}.")]


def list_recipes(method: MethodFilter = None) -> None:
    """List the bundled recipes: each method's paper recipe and its ablation overlays, with
    the published row each reproduces. Use one with `--config NAME`."""
    from rich.table import Table

    from ..recipes import bundled_recipes

    table = Table(show_lines=False)
    for column in ("name", "kind", "paper row", "sets"):
        table.add_column(column, overflow="fold")
    for name, recipe in sorted(bundled_recipes().items(), key=_listing_order):
        if method is not None and recipe.method != method:
            continue
        kind = "recipe" if recipe.is_method_recipe else "overlay"
        paper = recipe.paper.table.split(";")[0] if recipe.paper is not None else "none"
        switches = "(the paper's recipe)" if recipe.is_method_recipe else ", ".join(
            f"{key.split('.', 1)[1]}={value}" for key, value in _named_values(recipe)
        )
        table.add_row(name, kind, paper, switches)
    console.print(table)
    console.print("Show one merged: zsad recipes show NAME. Train it: zsad train --config NAME --data KIND:PATH --out DIR")


def _listing_order(item) -> tuple:
    """Per method: its paper recipe first, then its overlays by name."""
    name, recipe = item
    return recipe.method or "", not recipe.is_method_recipe, name


def _named_values(recipe) -> list[tuple[str, object]]:
    from ..recipes import SECTIONS

    return [(f"{section}.{key}", value) for section in SECTIONS for key, value in getattr(recipe, section).items()]


def show(
    name: Annotated[str, typer.Argument(help="A bundled recipe name (see `zsad recipes list`) or a YAML/JSON file.")],
    sources: Annotated[
        bool, typer.Option("--sources/--no-sources", help="Also print where each value comes from (default, recipe, overlay).")
    ] = True,
) -> None:
    """Print a recipe merged over the engine defaults and its method's paper recipe: every
    setting `zsad train --config NAME` would use, as YAML."""
    import yaml

    from ..recipes import load_recipe, resolve_settings

    recipe = load_recipe(name)
    merged = resolve_settings(None, recipe).as_dict()
    if not sources:
        merged.pop("sources")
    header = f"# {recipe.name}: {recipe.description}\n" if recipe.description else ""
    console.print(header + yaml.safe_dump(merged, sort_keys=False, width=100), highlight=False, soft_wrap=True, markup=False)


def listing(context: typer.Context, method: MethodFilter = None) -> None:
    """List the bundled recipes (`zsad recipes`), or show one (`zsad recipes show NAME`)."""
    if context.invoked_subcommand is None:
        list_recipes(method=method)
