"""The result rows of a large run, as Parquet shards, one per manifest chunk.

The scoring workers write the rows of each batch they score as a small part file of
its manifest chunk (:mod:`zsad.engine.path_manifest`), ``OUT/scores/.parts/NNNNNN/``,
and tell the driver only how many rows of which chunk they wrote. When all the rows of
a chunk are on disk, :class:`ShardAssembler` (in the driver) joins its parts into
``OUT/scores/part-NNNNNN.parquet`` atomically (a temporary file renamed into place) and
removes them. Rows never travel through the driver, so its memory holds one chunk at
most, whatever the number of images; a killed run loses exactly the chunks in flight: a
shard is either whole or absent, and a resumed run drops the parts it finds and scores
the chunks without a shard.

``OUT/scores/`` is a Parquet data set that pandas, DuckDB, Spark or pyarrow read as one
table. Columns (:data:`SHARD_SCHEMA`): path, score, label, p_value, error, map, overlay
(score, label and p_value are null for an unreadable file; error is "" for the others;
p_value is null without a calibration; map and overlay are "" when not written).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCORES_DIR", "SHARD_SCHEMA", "ShardAssembler", "count_errors", "done_chunks", "drop_parts", "shard_path", "write_part"]

SCORES_DIR = "scores"
SHARD_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("score", pa.float64()),
    ("label", pa.int8()),
    ("p_value", pa.float64()),
    ("error", pa.string()),
    ("map", pa.string()),
    ("overlay", pa.string()),
])
PARTS_DIR = ".parts"


def shard_path(out_dir: Path, chunk: int) -> Path:
    return out_dir / SCORES_DIR / f"part-{chunk:06d}.parquet"


def done_chunks(out_dir: Path) -> set[int]:
    """The chunks whose shard is on disk (complete by construction)."""
    folder = out_dir / SCORES_DIR
    if not folder.is_dir():
        return set()
    return {
        int(entry.name[len("part-") : -len(".parquet")])
        for entry in os.scandir(folder)
        if entry.name.startswith("part-") and entry.name.endswith(".parquet")
    }


def count_errors(out_dir: Path, chunks: Iterable[int]) -> int:
    """Rows with an error in the given chunks' shards (reads the error column alone)."""
    total = 0
    for chunk in chunks:
        errors = pq.read_table(shard_path(out_dir, chunk), columns=["error"]).column(0)
        total += sum(1 for value in errors.to_pylist() if value)
    return total


def _parts_folder(out_dir: Path, chunk: int) -> Path:
    return out_dir / SCORES_DIR / PARTS_DIR / f"{chunk:06d}"


def _write_atomically(table: pa.Table, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def write_part(out_dir: Path, chunk: int, rows: pa.Table) -> None:
    """A worker's rows of one chunk (:data:`SHARD_SCHEMA`), as one more part file."""
    folder = _parts_folder(out_dir, chunk)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(rows.cast(SHARD_SCHEMA), folder / f"{uuid.uuid4().hex}.parquet")


def drop_parts(out_dir: Path) -> None:
    """Remove the parts of chunks that an interrupted run did not finish."""
    shutil.rmtree(out_dir / SCORES_DIR / PARTS_DIR, ignore_errors=True)


class ShardAssembler:
    """Counts the rows written per chunk and makes each chunk's shard once all are there.

    expected: chunk number -> number of rows it will get (the manifest's counts)."""

    def __init__(self, out_dir: Path, expected: dict[int, int]):
        self.out_dir = out_dir
        (out_dir / SCORES_DIR).mkdir(parents=True, exist_ok=True)
        self._expected = dict(expected)
        self._received: dict[int, int] = {}
        self.n_rows = 0

    def add(self, chunk: int, n_rows: int) -> bool:
        """``n_rows`` more rows of ``chunk`` are in its parts; True when that made its shard."""
        if chunk not in self._expected:
            raise RuntimeError(f"rows of chunk {chunk}, which this run does not score")
        received = self._received.get(chunk, 0) + n_rows
        if received > self._expected[chunk]:
            raise RuntimeError(f"chunk {chunk} got {received} rows, expected {self._expected[chunk]}")
        self._received[chunk] = received
        if received < self._expected[chunk]:
            return False
        self._assemble(chunk)
        return True

    def _assemble(self, chunk: int) -> None:
        folder = _parts_folder(self.out_dir, chunk)
        parts = sorted(folder.glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(part) for part in parts]).sort_by("path")
        _write_atomically(table, shard_path(self.out_dir, chunk))
        shutil.rmtree(folder)
        del self._received[chunk]
        self.n_rows += table.num_rows

    def unfinished(self) -> list[int]:
        """Chunks that received some rows but not all (no shard was made for them)."""
        return sorted(self._received)
