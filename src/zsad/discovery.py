"""Finding the images a user points at, and saying what was left out and why.

``find_images`` expands files and folders into image paths, recursively and sorted.
Paths keep the form they were given in (``imgs/a.png``, never resolved through
symbolic links), so that result tables show what the user typed. Left out, each
with a reason the summary lists:

* the output folder of the run, and any folder holding zsad results (so a second run
  never scores the first run's overlays);
* hidden files and folders (``._x.jpg`` from macOS, ``.ipynb_checkpoints/``...);
* broken symbolic links, links in a cycle (``a -> b -> a``, ``self -> self``), unreadable
  folders, and a folder reached twice through links;
* a file named twice (on its own and within its folder, or in two spellings): it is kept
  once, where it first appears;
* files whose extension is not an image extension (counted, not listed one by one).

A file named explicitly is always kept whatever its extension, so that a wrong file
is reported by the reader instead of being dropped.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .errors import InvalidInputError, MissingInputError

__all__ = ["Discovery", "NOT_AN_IMAGE", "OUTPUT_MARKER", "find_images", "iter_folder_images", "reference_images", "unique_paths"]

# Written into every output folder of `zsad predict`; a folder holding it is results, not inputs.
OUTPUT_MARKER = ".zsad-output"
NOT_AN_IMAGE = "not an image file extension"


@dataclass
class Discovery:
    """paths: the images found; skipped: (path, reason) for everything left out."""

    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skipped_summary(self, max_listed: int = 20) -> list[str]:
        """Lines for the user: listed entries first, then counts of the merely counted ones."""
        listed = [f"{path}: {reason}" for path, reason in self.skipped if reason != NOT_AN_IMAGE]
        lines = listed[:max_listed]
        if len(listed) > max_listed:
            lines.append(f"... and {len(listed) - max_listed} more")
        others = sum(1 for _, reason in self.skipped if reason == NOT_AN_IMAGE)
        if others:
            lines.append(f"{others} file{'s' if others > 1 else ''} without an image extension")
        return lines


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _same_place(path: Path, others: Sequence[Path]) -> bool:
    try:
        return any(os.path.samefile(path, other) for other in others if other.exists())
    except OSError:
        return False


def _link_loop(path: Path) -> str | None:
    """The reason to skip a symbolic link that never reaches a file (a cycle of links),
    or None for anything else."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic link in a cycle (to {os.readlink(path)})"
    return None


def iter_folder_images(
    folder: Path, suffixes: Sequence[str], exclude: Sequence[Path], skip: Callable[[Path, str], None], in_name_order: bool = True,
) -> Iterator[Path]:
    """The image files under ``folder``, depth first, one at a time; each entry left out is
    reported to ``skip(path, reason)``. ``in_name_order`` sorts each folder's entries, which
    holds one folder's listing in memory; without it the walk keeps the file system's order
    and holds only the folders still to visit (for folders of millions of files)."""
    visited: set[str] = set()

    def skip_folder(path: Path) -> str | None:
        if _same_place(path, exclude):
            return "the output folder of this run"
        if (path / OUTPUT_MARKER).exists():
            return "a folder of zsad results"
        real = os.path.realpath(path)
        if real in visited:
            return "folder already searched (reached again through a link)"
        visited.add(real)
        return None

    pending = [folder]
    skip_folder(folder)  # remember the top folder as visited
    while pending:
        current = pending.pop()
        try:
            listing = os.scandir(current)
            entries = sorted(listing, key=lambda entry: entry.name) if in_name_order else listing
        except OSError as error:
            skip(current, f"cannot list the folder ({error.strerror or error})")
            continue
        subfolders = []
        for entry in entries:
            path = current / entry.name
            loop = _link_loop(path)
            if loop:
                skip(path, loop)
            elif _is_hidden(entry.name):
                skip(path, "hidden folder" if entry.is_dir() else "hidden file")
            elif entry.is_dir():  # follows links to folders
                reason = skip_folder(path)
                if reason:
                    skip(path, reason)
                else:
                    subfolders.append(path)
            elif entry.is_file():
                if path.suffix.lower() in suffixes:
                    yield path
                else:
                    skip(path, NOT_AN_IMAGE)
            elif entry.is_symlink():
                skip(path, f"broken symbolic link (to {os.readlink(path)})")
            else:
                skip(path, "not a regular file")
        pending.extend(reversed(subfolders))  # depth first, in name order


def find_images(inputs: Iterable[str | Path], suffixes: Sequence[str], exclude: Sequence[Path] = ()) -> Discovery:
    """Expand ``inputs`` (files and folders) into image paths; see the module docstring.

    Raises:
        MissingInputError: an input does not exist (a broken link given by name included;
            a link in a cycle is a skipped entry).
    """
    found = Discovery()
    exclude = [Path(path) for path in exclude]
    for item in inputs:
        path = Path(item).expanduser()
        loop = _link_loop(path)
        if loop:
            found.skipped.append((path, loop))
        elif path.is_dir():
            before = len(found.paths)
            found.paths.extend(iter_folder_images(path, suffixes, exclude, lambda *entry: found.skipped.append(entry)))
            found.paths[before:] = sorted(found.paths[before:])
        elif path.exists():
            found.paths.append(path)
        elif path.is_symlink():
            raise MissingInputError(f"input {path} is a broken symbolic link (to {os.readlink(path)})")
        else:
            raise MissingInputError(f"input not found: {path}")
    found.paths = unique_paths(found.paths)
    return found


def reference_images(reference: Path, suffixes: Sequence[str]) -> list[Path]:
    """The image files a reference folder (or one file) holds, searched recursively
    (``--reference``); InvalidInputError when it holds none. Needs no torch, so the command
    line checks it before the model loads."""
    paths = find_images([reference], suffixes).paths
    if not paths:
        raise InvalidInputError(f"no reference images ({', '.join(sorted(suffixes))}) found in {reference}")
    return paths


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    """``paths`` with each file once, where it first appears: two spellings of one path
    (``ov/good.jpg``, ``ov/./good.jpg``), or a file named on its own and within its
    folder, are one file. Symbolic links are not resolved (two links are two entries)."""
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique
