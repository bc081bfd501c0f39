"""The one way a command joins the app: ``add_command`` gives every command the filled
help texts, the error handler and its option groups."""
from __future__ import annotations

from typing import Callable, Optional, get_type_hints

import typer

from . import options as opt
from .error_handler import one_line_errors
from .help_text import LazyHelpCommand


def new_group(summary: str) -> typer.Typer:
    """A command group (``zsad data``, ``zsad analyze``) with the app's help style."""
    return typer.Typer(help=summary, no_args_is_help=True, rich_markup_mode=None)


def add_command(group: typer.Typer, command: Callable, name: Optional[str] = None) -> None:
    """Register ``command`` in ``group``. A parameter annotated with an option group
    (``opt.OPTION_GROUPS``) receives one instance of it, its fields becoming options."""
    hints = get_type_hints(command, include_extras=True)
    wrapped = command
    for parameter, hint in hints.items():
        if hint in opt.OPTION_GROUPS:
            wrapped = opt.option_group(parameter, hint)(wrapped)
    group.command(name=name, cls=LazyHelpCommand)(one_line_errors(wrapped))
