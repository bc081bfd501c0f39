"""Crash-safe writing of output files and protection against overwriting them.

Every file that ``zsad`` hands to a user (reports, score tables, maps, plots)
goes through :func:`atomic_save`: the content is written to a temporary file
in the destination directory, flushed to disk, and only then renamed over the
destination. A crash or an exception half-way therefore never leaves a
truncated file behind, and an existing file stays as it was.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import ZsadError

__all__ = [
    "OutputExistsError",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_can_write",
    "to_json_compatible",
]


class OutputExistsError(ZsadError, FileExistsError):
    """An output file exists already and overwriting was not allowed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(
            f"output file {self.path} exists already; pass --overwrite to replace it "
            "or choose another --out directory"
        )


def check_can_write(paths: Iterable[Path | str], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` for the first existing path unless ``overwrite``.

    Call this for *all* files a command will write before writing any of them,
    so that a refused run leaves no half-written set of outputs.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise OutputExistsError(Path(path))


def _file_mode_for(path: Path) -> int:
    """Permissions for a new output: those of the file it replaces, else 0o666 minus umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # Reading the umask through os.umask() would change process-wide state for a
    # moment; Linux exposes it read-only, elsewhere assume the common default.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(path: Path | str, writer: Callable[[Path], None], overwrite: bool = True) -> Path:
    """Create or replace ``path`` atomically with what ``writer`` writes.

    ``writer(tmp_path)`` must write the complete content to ``tmp_path``, a
    temporary file in the same directory whose name ends with the same suffix
    as ``path`` (so tools that pick the format from the extension, such as
    Pillow or matplotlib, behave as for ``path``). The temporary file is then
    fsynced and renamed over ``path`` with :func:`os.replace`. If ``writer``
    raises, the temporary file is removed, ``path`` is left untouched and the
    exception propagates. The parent directory is created if missing.

    With ``overwrite=False`` an existing ``path`` is never replaced, even one that
    appeared after the caller's :func:`check_can_write`: the file is put in place
    with a hard link, which fails when the name is taken, and
    :class:`OutputExistsError` is raised.

    Returns the destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode_for(path)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_path, mode)
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _link_without_replacing(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def _link_without_replacing(tmp_path: Path, path: Path) -> None:
    """Give ``tmp_path``'s file the name ``path`` unless that name exists; drop ``tmp_path``."""
    try:
        os.link(tmp_path, path)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise OutputExistsError(path) from None
        os.replace(tmp_path, path)
        return
    tmp_path.unlink()


def atomic_write_bytes(path: Path | str, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_save`)."""
    return atomic_save(path, lambda tmp: tmp.write_bytes(data), overwrite=overwrite)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8", overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically, byte for byte (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite=overwrite)


def to_json_compatible(obj: Any, *, nonfinite: str = "null") -> Any:
    """Return a copy of ``obj`` that :func:`json.dumps` accepts with ``allow_nan=False``.

    - numpy scalars and arrays become Python numbers and (nested) lists;
    - tuples become lists, ``os.PathLike`` objects become strings;
    - float NaN and +-inf become ``None`` (``nonfinite="null"``, the default:
      JSON has no such values and ``null`` reads as "not available") or raise
      ``ValueError`` (``nonfinite="error"``).

    Other types are left alone, so ``json`` still rejects what it cannot encode.
    """
    if nonfinite not in ("null", "error"):
        raise ValueError(f"nonfinite must be 'null' or 'error', got {nonfinite!r}")
    if isinstance(obj, dict):
        return {key: to_json_compatible(value, nonfinite=nonfinite) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_compatible(value, nonfinite=nonfinite) for value in obj]
    if isinstance(obj, np.ndarray):
        return to_json_compatible(obj.tolist(), nonfinite=nonfinite)
    if isinstance(obj, np.generic):
        return to_json_compatible(obj.item(), nonfinite=nonfinite)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        if nonfinite == "error":
            raise ValueError(f"cannot write the non-finite number {obj} to JSON")
        return None
    return obj


def atomic_write_json(path: Path | str, obj: Any, *, nonfinite: str = "null", overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON (indent 2, UTF-8, trailing newline) atomically.

    NaN and infinities are never written: by default they become ``null``;
    with ``nonfinite="error"`` a ``ValueError`` is raised and nothing is written.
    See :func:`to_json_compatible` for the other conversions.
    """
    clean = to_json_compatible(obj, nonfinite=nonfinite)
    text = json.dumps(clean, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """CSV text with a header line: ``rows`` are mappings (read by column name, missing keys
    empty) or sequences in column order; lines end with a bare newline."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(key, "") for key in columns] if isinstance(row, Mapping) else row)
    return buffer.getvalue()
