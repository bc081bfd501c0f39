"""One run per output folder: a lock file that a second run sees and names.

A command that writes into ``--out`` claims the folder for its whole run with
:func:`claim_output_folder`. The claim is an exclusive ``flock`` on
``OUT/.zsad-lock``, a small JSON file naming the process that holds it (pid, host,
command line, start time). A second run on the same folder fails at once with
:class:`OutputFolderBusyError`, whose message names the first run. The operating
system drops the lock when its process ends, however it ends (``kill -9``
included), so a lock file left behind by a dead run never blocks the next one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "OutputFolderBusyError", "claim_output_folder"]

LOCK_NAME = ".zsad-lock"


class OutputFolderBusyError(RuntimeError):
    """Another running process holds the output folder."""

    def __init__(self, folder: Path, holder: dict):
        self.folder = folder
        self.holder = holder
        who = ", ".join(
            f"{label} {holder[key]}"
            for key, label in (("pid", "pid"), ("host", "on"), ("started", "started"))
            if holder.get(key)
        )
        command = holder.get("command")
        super().__init__(
            f"output folder {folder} is in use by another zsad run ({who or 'unknown process'}"
            + (f": `{command}`" if command else "")
            + "). Wait for it to finish or choose another --out; two runs in one folder would mix their results."
        )


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _same_file(handle, path: Path) -> bool:
    """True when the open ``handle`` is still the file at ``path`` (not unlinked/replaced)."""
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def claim_output_folder(folder: Path | str) -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for the duration of the ``with`` block.

    Raises:
        OutputFolderBusyError: another live process holds the folder.
        OSError: the folder cannot be created or written (the caller reports it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_NAME
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputFolderBusyError(folder, _read_holder(lock_path)) from None
        if _same_file(handle, lock_path):
            break
        handle.close()  # the previous holder removed the file between our open and lock: retry
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(["zsad", *sys.argv[1:]]),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        handle.flush()
        yield folder
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()
