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
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from .errors import ZsadError

__all__ = ["LOCK_NAME", "OutputFolderBusyError", "OutputFolderError", "claim_output_folder"]

LOCK_NAME = ".zsad-lock"


class OutputFolderError(ZsadError, RuntimeError):
    """The output folder cannot be used; the message names it and says what to do."""


class OutputFolderBusyError(OutputFolderError):
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


def _unusable(folder: Path, error: OSError) -> OutputFolderError:
    """A clear error for an output folder that cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        return OutputFolderError(f"--out {folder} is a file, not a folder; choose a folder path for --out")
    blocking = next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        return OutputFolderError(f"--out {folder} lies under {blocking}, which is a file; choose a folder path for --out")
    why = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
           errno.ENOSPC: "the disk is full"}.get(error.errno, error.strerror or str(error))
    return OutputFolderError(f"cannot write into the output folder {folder} ({why}); choose a --out on a writable disk")


@contextlib.contextmanager
def claim_output_folder(folder: Path | str) -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for the duration of the ``with`` block.

    Raises:
        OutputFolderBusyError: another live process holds the folder.
        OutputFolderError: the folder cannot be created or written (a file is in the
            way, a read-only file system...); the message names the path.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")
        except OSError as error:
            raise _unusable(folder, error) from error
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
