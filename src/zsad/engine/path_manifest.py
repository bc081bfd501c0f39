"""The list of images of a large run, streamed to disk in numbered chunks.

A run over millions of images never holds its paths in the driver's memory. The
inputs (files, folders searched recursively, and lists of paths in a text, CSV or
Parquet file) are read one path at a time and written to ``OUT/manifest/`` as Parquet
files of at most ``chunk_size`` paths each (``chunk-000000.parquet``, ...). The
manifest is built once: it appears under its final name only when complete (it is
written to a temporary folder first), so a resumed run reuses exactly the same chunks,
and a chunk is the unit of work that the run's output shards record as done
(:mod:`zsad.engine.score_shards`).

Folders are walked in the file system's order (a sorted walk would hold each folder's
listing), so the chunks of two manifests of the same folder may differ in order;
resuming reuses the manifest, never rebuilds it. Entries left out of a folder search (hidden files, zsad outputs, broken links...) are
written to ``OUT/skipped.csv`` with their reason as they are met.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..discovery import NOT_AN_IMAGE, iter_folder_images
from ..errors import InvalidInputError, MissingInputError
from ..fileio import atomic_write_json

__all__ = ["SCHEMA", "Manifest", "PathList", "build_manifest", "chunk_file", "iter_path_list", "read_manifest"]

MANIFEST_DIR = "manifest"
SKIPPED_NAME = "skipped.csv"
_INDEX_NAME = "index.json"
_PATH_LIST_SUFFIXES = (".txt", ".csv", ".parquet")
SCHEMA = pa.schema([("path", pa.string()), ("chunk", pa.int64()), ("index", pa.int64())])


@dataclass(frozen=True)
class PathList:
    """A file listing image paths: ``.txt`` (one per line), ``.csv`` or ``.parquet``
    (the column ``column``). Relative paths are taken relative to the list's folder."""

    file: Path
    column: str = "path"


@dataclass(frozen=True)
class Manifest:
    """A complete manifest: ``chunks[i]`` = (Parquet file, number of paths in it)."""

    folder: Path
    chunks: tuple[tuple[Path, int], ...]
    n_skipped: int
    n_not_images: int

    @property
    def n_images(self) -> int:
        return sum(count for _, count in self.chunks)


def _resolve_listed(raw: str, base: Path) -> Path:
    path = Path(raw.strip()).expanduser()
    return path if path.is_absolute() else base / path


def iter_path_list(source: PathList, batch_rows: int = 65536) -> Iterator[Path]:
    """The paths a list file names, read in bounded pieces (never the whole file)."""
    file = source.file
    if not file.is_file():
        raise MissingInputError(f"path list not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in _PATH_LIST_SUFFIXES:
        raise InvalidInputError(f"path list {file}: use a .txt (one path per line), .csv or .parquet file, not {suffix or 'no suffix'}")
    base = file.parent
    if suffix == ".txt":
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield _resolve_listed(line.rstrip("\n"), base)
    elif suffix == ".csv":
        with open(file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or source.column not in reader.fieldnames:
                raise InvalidInputError(
                    f"{file} has no column {source.column!r} (columns: {', '.join(reader.fieldnames or [])}); name it with --path-column"
                )
            for row in reader:
                if row[source.column]:
                    yield _resolve_listed(row[source.column], base)
    else:
        parquet = pq.ParquetFile(file)
        if source.column not in parquet.schema_arrow.names:
            raise InvalidInputError(
                f"{file} has no column {source.column!r} (columns: {', '.join(parquet.schema_arrow.names)}); name it with --path-column"
            )
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[source.column]):
            for value in batch.column(0).to_pylist():
                if value:
                    yield _resolve_listed(value, base)


class _SkippedLog:
    """``skipped.csv``, appended as entries are met; only counts stay in memory."""

    def __init__(self, path: Path):
        self._handle = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self._writer.writerow(["path", "reason"])
        self.n_listed = 0
        self.n_not_images = 0

    def __call__(self, path: Path, reason: str) -> None:
        if reason == NOT_AN_IMAGE:
            self.n_not_images += 1
            return
        self._writer.writerow([str(path), reason])
        self.n_listed += 1

    def close(self) -> None:
        self._handle.close()


def _iter_inputs(
    inputs: Sequence[Path], lists: Sequence[PathList], suffixes: Sequence[str], exclude: Sequence[Path], skip: _SkippedLog
) -> Iterator[Path]:
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            yield from iter_folder_images(path, suffixes, exclude, skip, in_name_order=False)
        elif path.exists():
            yield path
        else:
            raise MissingInputError(f"input not found: {path}")
    for source in lists:
        yield from iter_path_list(source)


def chunk_file(folder: Path, number: int) -> Path:
    return folder / f"chunk-{number:06d}.parquet"


def _write_chunk(folder: Path, number: int, paths: list[str]) -> None:
    """One chunk: its paths, with the chunk's number and each path's place in it."""
    columns = [pa.array(paths, pa.string()), pa.array([number] * len(paths), pa.int64()), pa.array(range(len(paths)), pa.int64())]
    pq.write_table(pa.Table.from_arrays(columns, schema=SCHEMA), chunk_file(folder, number))


def _chunked(paths: Iterable[Path], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(str(path))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_manifest(
    out_dir: Path,
    inputs: Sequence[Path],
    lists: Sequence[PathList],
    suffixes: Sequence[str],
    chunk_size: int,
) -> Manifest:
    """Write ``OUT/manifest/`` from the inputs (see the module docstring) and return it.
    Memory: one chunk of paths plus the folder walk's stack.

    Raises:
        MissingInputError: an input or list file does not exist.
        InvalidInputError: a list file is of an unknown kind or lacks the path column;
            no image was found.
    """
    if chunk_size < 1:
        raise InvalidInputError(f"the chunk size must be at least 1, got {chunk_size}")
    final = out_dir / MANIFEST_DIR
    building = out_dir / f".{MANIFEST_DIR}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    skipped = _SkippedLog(out_dir / SKIPPED_NAME)
    counts: list[int] = []
    try:
        stream = _iter_inputs(inputs, lists, suffixes, [out_dir], skipped)
        for number, chunk in enumerate(_chunked(stream, chunk_size)):
            _write_chunk(building, number, chunk)
            counts.append(len(chunk))
    finally:
        skipped.close()
    if not counts:
        shutil.rmtree(building)
        named = ", ".join(map(str, [*inputs, *(source.file for source in lists)]))
        raise InvalidInputError(f"no image files ({', '.join(sorted(suffixes))}) found in {named}")
    atomic_write_json(building / _INDEX_NAME, {"chunks": counts, "n_skipped": skipped.n_listed, "n_not_images": skipped.n_not_images})
    shutil.rmtree(final, ignore_errors=True)
    building.rename(final)
    return read_manifest(out_dir)


def read_manifest(out_dir: Path) -> Manifest | None:
    """The complete manifest in ``out_dir``, or None when there is none."""
    folder = out_dir / MANIFEST_DIR
    try:
        index = json.loads((folder / _INDEX_NAME).read_text())
    except (OSError, ValueError):
        return None
    chunks = tuple((chunk_file(folder, number), count) for number, count in enumerate(index["chunks"]))
    return Manifest(folder, chunks, index["n_skipped"], index["n_not_images"])
