"""The one error handler of every command (applied by ``registration.add_command``).

A ``ZsadError`` is a problem the user can fix: one red line, exit status 1. Anything else
is a bug in zsad: it keeps its traceback, after one line asking the user to report it.
"""
from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.markup import escape

from ..errors import ZsadError
from .console import err_console

REPORT_HINT = (
    "zsad stopped on an internal error (a bug, not a problem with your input). Please report it to the "
    "zsad maintainers with the command you ran and the traceback below."
)


def _is_command_line_control(error: Exception) -> bool:
    """typer's (click's) own exits and usage errors, raised on purpose: they pass unchanged."""
    return type(error).__module__.split(".")[0] in ("typer", "click")


def one_line_errors(command: Callable) -> Callable:
    """User errors (``ZsadError``) become one line and exit status 1; bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ZsadError as error:
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as error:
            if not _is_command_line_control(error):
                err_console.print(f"[bold red]{REPORT_HINT}[/]", soft_wrap=True)
            raise

    return wrapper
