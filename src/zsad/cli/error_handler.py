"""The one error handler of every command (applied by ``registration.add_command``)."""
from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.markup import escape

from .console import err_console


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix (imported when one is being handled, not before)."""
    from ..checkpoints import CheckpointError
    from ..clip_weights import WeightsUnavailableError
    from ..engine.training import TrainingError
    from ..fileio import OutputExistsError
    from ..imageio import ImageReadError
    from ..output_lock import OutputFolderError

    return (
        WeightsUnavailableError, CheckpointError, OutputExistsError, OutputFolderError, ImageReadError, TrainingError,
        FileNotFoundError, ValueError,
    )


def one_line_errors(command: Callable) -> Callable:
    """The errors a user can fix become one clear line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as error:  # evaluated only when something was raised
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
