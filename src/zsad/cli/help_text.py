"""Help texts whose lists come from the code: an option's help may hold a placeholder,
filled in only when a help page is shown, so that the lists cannot go stale and reading
the command line imports nothing heavy.

Placeholders: ``{methods}`` (every method, training-free ones marked),
``{trainable_methods}``, ``{training_free_methods}``, ``{set_methods}``, ``{data_kinds}``
(the KIND names of ``--data``), ``{unlabelled_splits}`` (the kinds' predict-only splits)
and ``{default:FIELD}`` (a TrainingConfig default).
"""
from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

PLACEHOLDER = re.compile(r"\{(methods|trainable_methods|training_free_methods|set_methods|data_kinds|unlabelled_splits|default:\w+)\}")


def _data_kinds() -> str:
    from ..data.layouts import LAYOUTS

    return ", ".join(LAYOUTS)


def _unlabelled_splits() -> str:
    from ..data.layouts import LAYOUTS

    return "; ".join(f"{kind}: {', '.join(layout.predict_only_splits)}" for kind, layout in LAYOUTS.items() if layout.predict_only_splits)


def _training_default(field: str) -> str:
    from ..engine.train_config import TrainingConfig

    return str(TrainingConfig.__dataclass_fields__[field].default)


def fill(text: str) -> str:
    """``text`` with every known placeholder replaced by its list or value."""
    from ..method_names import methods_help, set_methods_help, trainable_methods_help, training_free_methods_help

    def replacement(match: re.Match) -> str:
        key = match.group(1)
        if key == "methods":
            return methods_help()
        if key == "trainable_methods":
            return trainable_methods_help()
        if key == "training_free_methods":
            return training_free_methods_help()
        if key == "set_methods":
            return set_methods_help()
        if key == "data_kinds":
            return _data_kinds()
        if key == "unlabelled_splits":
            return _unlabelled_splits()
        return _training_default(key.removeprefix("default:"))

    return PLACEHOLDER.sub(replacement, text)


def _fill_parameters(command) -> None:
    for parameter in command.params:
        text = getattr(parameter, "help", None)
        if text and PLACEHOLDER.search(text):
            parameter.help = fill(text)


class LazyHelpCommand(TyperCommand):
    """A command whose help texts are filled (see the module's docstring) when shown."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _fill_parameters(self)
        super().format_help(ctx, formatter)


class LazyHelpGroup(TyperGroup):
    """A command group whose own options' help texts are filled when shown."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _fill_parameters(self)
        super().format_help(ctx, formatter)
