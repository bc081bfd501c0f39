"""The one way a command joins the app: ``add_command`` gives every command the filled
help texts, the error handler and its option groups."""
from __future__ import annotations

from typing import Callable, Optional, get_type_hints

import typer

from . import options as opt
from .error_handler import one_line_errors
from .help_text import LazyHelpCommand, LazyHelpGroup


def new_group(summary: str, default: Optional[Callable] = None) -> typer.Typer:
    """A command group (``zsad data``, ``zsad analyze``) with the app's help style.
    ``default``: a callback run before any subcommand, with the error handler (it takes a
    ``typer.Context`` and does the group's work when ``context.invoked_subcommand`` is
    None, as ``zsad recipes`` lists); without one, the bare group prints its help."""
    group = typer.Typer(help=summary, cls=LazyHelpGroup, no_args_is_help=default is None, rich_markup_mode=None)
    if default is not None:
        group.callback(invoke_without_command=True)(one_line_errors(default))
    return group


def add_command(group: typer.Typer, command: Callable, name: Optional[str] = None) -> None:
    """Register ``command`` in ``group``. A parameter annotated with an option group
    (``opt.OPTION_GROUPS``) receives one instance of it, its fields becoming options."""
    hints = get_type_hints(command, include_extras=True)
    wrapped = command
    for parameter, hint in hints.items():
        if hint in opt.OPTION_GROUPS:
            wrapped = opt.option_group(parameter, hint)(wrapped)
    group.command(name=name, cls=LazyHelpCommand)(one_line_errors(wrapped))
