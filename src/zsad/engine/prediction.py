"""Prediction on a user's own images: overlays, raw maps and a score table.

A run claims its output folder for its whole duration (:mod:`zsad.output_lock`),
writes each image's row to scores.csv as soon as the image is done
(:mod:`zsad.score_table`), and never replaces a file that it did not check first.
Images of any size are processed in bounded memory: the model sees a reduced
decode (:func:`zsad.imageio.read_image_reduced`) and the full-size pictures are
written band by band (:mod:`zsad.map_files`).
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..calibration import ClassCalibration
from ..discovery import OUTPUT_MARKER, unique_paths
from ..fileio import check_can_write
from ..imageio import ImageReadError, read_image, read_image_reduced
from ..map_files import write_overlay, write_raw_map
from ..output_lock import claim_output_folder
from ..plurals import counted
from ..score_table import ScoreTable
from .runtime import image_counter
from .scorer import Scorer

OVERLAY_DIR = "overlays"
MAP_DIR = "maps"


@dataclass
class PredictionSummary:
    rows: list[dict[str, Any]]
    written: list[Path]
    n_previous: int = 0  # rows kept from an interrupted run (--resume)

    @property
    def n_errors(self) -> int:
        return sum(1 for row in self.rows if row["error"])


class PredictionInterrupted(Exception):
    """The run was stopped (Ctrl-C); ``done`` of ``total`` images have their rows on disk."""

    def __init__(self, done: int, total: int, out_dir: Path):
        self.done, self.total, self.out_dir = done, total, out_dir
        super().__init__(f"interrupted after {done} of {counted(total, 'image')}")


def output_names(paths: list[Path]) -> list[str]:
    """Unique, readable file stems: the path relative to the inputs' common folder with
    separators replaced by '__' (``good/001.png`` -> ``good__001``). Paths are taken
    as given (made absolute, never resolved through symbolic links)."""
    if not paths:
        return []
    absolute = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([p.parent for p in absolute]))
    names = ["__".join(p.relative_to(common).with_suffix("").parts) for p in absolute]
    if len(set(names)) != len(names):  # e.g. a.png and a.jpg in one folder
        names = ["__".join(p.relative_to(common).parts).replace(".", "_") for p in absolute]
    return names


def _read_for_model(path: Path, side: int) -> tuple[Image.Image, tuple[int, int]] | ImageReadError:
    try:
        return read_image_reduced(path, side)
    except ImageReadError as error:
        return error


def _full_image(path: Path, reduced: Image.Image, full_size: tuple[int, int]) -> Image.Image:
    """The image at its own size: the reduced decode when nothing was reduced, else read again."""
    return reduced if reduced.size == full_size else read_image(path)


def calibration_identity(calibration: ClassCalibration | None) -> dict[str, Any] | None:
    """What the scoring identity records of a calibration entry: its thresholds and a hash
    of the whole entry (the normal scores behind its p-values included); None without one."""
    if calibration is None:
        return None
    entry = json.dumps(asdict(calibration), sort_keys=True).encode()
    return {
        "class_words": calibration.class_words, "image_threshold": calibration.image_threshold,
        "pixel_threshold": calibration.pixel_threshold, "sha256": hashlib.sha256(entry).hexdigest(),
    }


def predict_files(
    predictor: Scorer,
    paths: list[Path],
    out_dir: Path,
    threshold: float,
    class_name: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
    num_workers: int = 0,
    resume: bool = False,
    calibration: ClassCalibration | None = None,
) -> PredictionSummary:
    """Score every image once with ``predictor`` (any :class:`~zsad.engine.scorer.Scorer`);
    write per image an overlay PNG (see :func:`zsad.map_files.write_overlay`)
    and the raw map as 16-bit PNG, and a row of scores.csv; scores.json at the end.

    Unreadable files get a row with their error; every other image is still processed.
    Nothing that exists is overwritten unless ``overwrite``. ``resume`` continues an
    interrupted run in ``out_dir``: images with a row are kept, the others are scored;
    the scoring identity (the scorer's :meth:`~zsad.engine.scorer.Scorer.identity` with
    the calibration entry, recorded in scores.json from the start) and the threshold must
    be those of the earlier run.
    ``calibration`` (a `zsad calibrate` entry for this model): its image threshold labels
    the images (it replaces ``threshold``), its pixel threshold draws the contours, and
    scores.csv gets a ``p_value`` column (see :func:`zsad.calibration.p_values`).
    ``meta`` (method, backbone, weights...) is recorded in every file: scores.json, a
    column of scores.csv, and PNG text chunks. ``num_workers`` threads decode the images.
    The result folders are marked as results, so that a later run given a folder that
    holds them (``--out`` equal to an input folder) never scores them.

    Raises:
        OutputFolderBusyError: another run holds ``out_dir``.
        ResumeMismatchError: ``resume`` with another scorer or threshold (names each difference).
        PredictionInterrupted: on Ctrl-C, after scores.json was written with what was done.
    """
    meta = meta or {}
    if calibration is not None:
        threshold = calibration.image_threshold
    contour = None if calibration is None else calibration.pixel_threshold
    provenance = {key: meta[key] for key in ("method", "backbone", "weights") if key in meta}
    side = predictor.image_size
    paths = unique_paths(paths)
    names = dict(zip(paths, output_names(paths)))
    identity = {**predictor.identity(class_name), "calibration": calibration_identity(calibration)}
    with claim_output_folder(out_dir), ScoreTable(
        out_dir, provenance, {**meta, "threshold": threshold}, overwrite, resume, ("p_value",) if calibration else (), identity,
    ) as table:
        todo = [path for path in paths if str(path) not in table.done_paths]
        replace = overwrite or resume  # an interrupted run's files for images without a row are its own
        if not replace:
            check_can_write([out_dir / folder / f"{names[p]}.png" for p in todo for folder in (OVERLAY_DIR, MAP_DIR)], overwrite)
        for folder in (out_dir, out_dir / OVERLAY_DIR, out_dir / MAP_DIR):
            folder.mkdir(exist_ok=True)
            (folder / OUTPUT_MARKER).touch()  # results, never inputs (see zsad.discovery)
        written: list[Path] = []
        pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
        read = pool.map if pool is not None else map
        counter = image_counter(len(paths), "predict", initial=len(paths) - len(todo), enabled=show_progress)
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                decoded = list(read(lambda path: _read_for_model(path, side), batch))
                readable = [(path, item) for path, item in zip(batch, decoded) if not isinstance(item, ImageReadError)]
                if readable:
                    scores, maps = predictor.score_and_map([image for _, (image, _) in readable], class_name=class_name)
                    results = {path: (score, low) for (path, _), score, low in zip(readable, scores, maps)}
                rows = []
                for path, item in zip(batch, decoded):
                    if isinstance(item, ImageReadError):
                        rows.append({"path": str(path), "error": item.reason})
                        continue
                    score, low = results[path]
                    image, full_size = item
                    overlay = out_dir / OVERLAY_DIR / f"{names[path]}.png"
                    raw = out_dir / MAP_DIR / f"{names[path]}.png"
                    write_overlay(
                        overlay, _full_image(path, image, full_size), low, score, threshold, provenance, overwrite=replace,
                        contour_threshold=contour,
                    )
                    write_raw_map(raw, low, full_size[::-1], provenance, overwrite=replace)
                    written += [overlay, raw]
                    rows.append({
                        "path": str(path), "score": score, "label": int(score >= threshold), "error": "",
                        "overlay": str(overlay.relative_to(out_dir)), "map": str(raw.relative_to(out_dir)),
                        **({"p_value": round(float(calibration.p_values([score])[0]), 6)} if calibration else {}),
                    })
                table.add(rows)
                counter.update(len(batch))
        except KeyboardInterrupt:
            counter.close()
            table.finish(complete=False, n_total=len(paths))
            raise PredictionInterrupted(len(table.rows), len(paths), out_dir) from None
        finally:
            counter.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        written += [table.csv_path, table.finish(complete=True, n_total=len(paths))]
    position = {str(path): i for i, path in enumerate(paths)}
    rows = sorted(table.rows, key=lambda row: position.get(row["path"], len(position)))
    return PredictionSummary(rows=rows, written=written, n_previous=table.n_previous)
