"""`scores.csv` written as the images are scored, `scores.json` when the run ends.

Each image's row is appended to ``scores.csv`` and flushed to disk the moment it is
known, so an interrupted run (Ctrl-C, a crash, ``kill -9``) keeps every score it
produced. ``scores.json`` (the same rows plus the run's metadata, full-precision
scores, and ``"complete"``) is first written when the run starts (``"complete": false``, with the
run's scoring identity: model content, method config, prompt words, references,
calibration), and again at the end or on an interrupt. A later run can continue an
interrupted one: it reads the rows back and scores only the images without a row,
once its identity and threshold equal the recorded ones (one comparator,
:func:`zsad.checkpoints.config_differences`, names every difference).

Columns: ``path`` (as given), ``score`` (6 decimals, empty when unreadable),
``label`` (1 at or above the threshold), ``error``, ``overlay`` and ``map`` (the
result files, relative to the output folder), any extra columns of the run (e.g.
``p_value`` with a calibration), then the provenance columns (method, backbone, weights).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .checkpoints import config_differences, describe_differences
from .errors import InvalidInputError
from .fileio import OutputExistsError, atomic_write_json

__all__ = ["SCORE_COLUMNS", "ResumeMismatchError", "ScoreTable"]

SCORE_COLUMNS = ("path", "score", "label", "error", "overlay", "map")
CSV_NAME = "scores.csv"
JSON_NAME = "scores.json"


class ResumeMismatchError(InvalidInputError):
    """The rows already in scores.csv come from another model or threshold."""


def _parse_row(row: Mapping[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = dict(row)
    parsed["score"] = float(row["score"]) if row.get("score") else None
    parsed["label"] = int(row["label"]) if row.get("label") else None
    return parsed


class ScoreTable:
    """The score files of one run in ``out_dir``; use as a context manager.

    ``provenance`` (method, backbone, weights) becomes columns; ``meta`` goes into
    scores.json, with ``identity`` (everything that decides the scores) under
    ``"identity"``. Rows are dicts with the keys of :data:`SCORE_COLUMNS`.
    """

    def __init__(
        self,
        out_dir: Path,
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any],
        overwrite: bool,
        resume: bool = False,
        extra_columns: Sequence[str] = (),
        identity: Mapping[str, Any] | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / CSV_NAME
        self.json_path = self.out_dir / JSON_NAME
        self.provenance = dict(provenance)
        # As JSON stores it (tuples become lists), so that a resumed run compares like with like.
        self.meta = {**meta, "identity": json.loads(json.dumps(identity))}
        self.extra_columns = tuple(extra_columns)
        self.columns = [*SCORE_COLUMNS, *self.extra_columns, *self.provenance]
        self.rows: list[dict[str, Any]] = self._previous_rows() if resume else []
        if resume and self.rows:
            self._handle = open(self.csv_path, "a", newline="", encoding="utf-8")
        else:
            if not overwrite and not resume:
                for path in (self.csv_path, self.json_path):
                    if path.exists():
                        raise OutputExistsError(path)
            self._write_json(complete=False, n_total=None)  # the identity is on disk before any row
            # "x" refuses a file that appeared after the check; with --overwrite, replace it.
            self._handle = open(self.csv_path, "w" if overwrite or resume else "x", newline="", encoding="utf-8")
            csv.writer(self._handle, lineterminator="\n").writerow(self.columns)
            self._sync()
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self.n_previous = len(self.rows)

    def _previous_rows(self) -> list[dict[str, Any]]:
        """The rows an earlier run wrote (none when there is no scores.csv); refuses another model."""
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return []
            if list(reader.fieldnames) != self.columns:
                raise ResumeMismatchError(
                    f"{self.csv_path} has the columns {', '.join(reader.fieldnames)}, not those of this run "
                    f"({', '.join(self.columns)}); it was not written by this kind of run. Use another --out."
                )
            rows = [_parse_row(row) for row in reader if row.get("path")]
        if rows:
            self._check_same_scorer()
        return rows

    def _check_same_scorer(self) -> None:
        """Refuse to add rows to those of another scorer or threshold, naming every difference."""
        try:
            earlier = json.loads(self.json_path.read_text(encoding="utf-8"))["meta"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ResumeMismatchError(
                f"{self.json_path} is missing or damaged, so it cannot be told which model wrote the rows of "
                f"{self.csv_path}; start again with --overwrite, or use another --out."
            ) from None
        current = {"threshold": self.meta.get("threshold"), "identity": self.meta["identity"]}
        recorded = {key: earlier.get(key) for key in current}
        differences = config_differences(current, recorded, stored_name="the earlier run")
        if differences:
            raise ResumeMismatchError(
                describe_differences(f"cannot resume in {self.out_dir}: its rows were scored with other settings", differences)
                + "\nResume with the same options (--threshold included), start again with --overwrite, or use another --out."
            )

    @property
    def done_paths(self) -> set[str]:
        return {row["path"] for row in self.rows}

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows to scores.csv and push them to disk."""
        for row in rows:
            full = {**{column: None for column in (*SCORE_COLUMNS, *self.extra_columns)}, **row, **self.provenance}
            score = full["score"]
            cells = [
                ("" if score is None else f"{score:.6f}") if column == "score" else ("" if full[column] is None else full[column])
                for column in self.columns
            ]
            self._writer.writerow(cells)
            self.rows.append(full)
        self._sync()

    def _write_json(self, complete: bool, n_total: int | None) -> Path:
        meta = {**self.meta, "complete": complete, "n_images": n_total, "n_done": len(self.rows)}
        return atomic_write_json(self.json_path, {"meta": meta, "images": self.rows})

    def finish(self, complete: bool, n_total: int) -> Path:
        """Close scores.csv and write scores.json (``complete``: every input has a row)."""
        self._handle.close()
        return self._write_json(complete, n_total)

    def __enter__(self) -> "ScoreTable":
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._handle.closed:
            self._handle.close()
