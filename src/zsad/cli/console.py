"""Where the commands write: results to stdout, messages to stderr, and the exit statuses
they share."""
from __future__ import annotations

from rich.console import Console

EXIT_BAD_INPUT = 2  # some inputs could not be used (listed); the rest was done
EXIT_INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)

console = Console()
err_console = Console(stderr=True)
