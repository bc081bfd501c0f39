"""One large prediction run in an output folder: manifest, shards, resume, summary.

Layout of ``OUT``:

* ``run.json``: what scores the images (the scoring identity: model, words, threshold,
  outputs asked for) and, at the end, the counts; written first, so that ``--resume``
  can refuse a run with another identity by the one comparator
  (:func:`zsad.checkpoints.config_differences`);
* ``manifest/``: the paths, in chunks (:mod:`zsad.engine.path_manifest`);
* ``skipped.csv``: entries of the input folders that were not scored, with the reason;
* ``scores/part-NNNNNN.parquet``: the result rows, one shard per chunk
  (:mod:`zsad.engine.score_shards`);
* ``maps/`` and ``overlays/`` when asked for.

The semantics are those of `zsad predict`: unreadable files get a row with the reason,
outputs and hidden files are skipped and listed, nothing is replaced without
``overwrite``, and ``resume`` scores only what has no row yet.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checkpoints import config_differences
from ..discovery import OUTPUT_MARKER
from ..errors import InvalidInputError, ZsadError
from ..fileio import OutputExistsError, atomic_write_json
from ..output_lock import claim_output_folder
from .path_manifest import MANIFEST_DIR, SKIPPED_NAME, Manifest, PathList, build_manifest, read_manifest
from .ray_scoring import MAP_DIR, OVERLAY_DIR, BatchScorer, OutputSettings, ScaleSettings, score_manifest, start_ray
from .runtime import image_counter
from .score_shards import SCORES_DIR, count_errors, done_chunks, drop_parts

__all__ = ["ManyInterrupted", "ManySummary", "RunMismatchError", "predict_many"]

RUN_NAME = "run.json"
_RUN_OUTPUTS = (RUN_NAME, MANIFEST_DIR, SKIPPED_NAME, SCORES_DIR, MAP_DIR, OVERLAY_DIR)


class RunMismatchError(ZsadError, ValueError):
    """``--resume`` into a folder whose run had another scoring identity."""


class ManyInterrupted(Exception):
    """Ctrl-C: ``done`` of ``total`` images are in complete shards."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"interrupted after {done} of {total} images")


@dataclass(frozen=True)
class ManySummary:
    """n_images: paths in the manifest; n_previous: rows kept from an earlier run;
    n_errors: unreadable files (all shards); n_skipped: entries of the input folders not
    scored (listed in skipped.csv) and n_not_images files without an image extension."""

    out_dir: Path
    n_images: int
    n_previous: int
    n_errors: int
    n_skipped: int
    n_not_images: int


def _existing_outputs(out_dir: Path) -> list[Path]:
    return [out_dir / name for name in _RUN_OUTPUTS if (out_dir / name).exists()]


def _prepare_folder(out_dir: Path, identity: dict[str, Any], overwrite: bool, resume: bool) -> None:
    """Check the earlier run (resume), or refuse an occupied folder, or clear it (overwrite)."""
    if resume:
        run_file = out_dir / RUN_NAME
        earlier = json.loads(run_file.read_text())["identity"] if run_file.exists() else identity
        differences = config_differences(identity, earlier)
        if differences:
            listed = "\n  ".join(differences[:20]) + (f"\n  ... and {len(differences) - 20} more" if len(differences) > 20 else "")
            raise RunMismatchError(
                f"{out_dir} holds a run with another scoring identity ({len(differences)} difference"
                f"{'s' if len(differences) != 1 else ''}; 'requested' is this run):\n  {listed}\n"
                "Resume with the same options, or use another --out."
            )
        return
    existing = _existing_outputs(out_dir)
    if existing and not overwrite:
        raise OutputExistsError(existing[0])
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def predict_many(
    inputs: Sequence[Path],
    lists: Sequence[PathList],
    out_dir: Path,
    make_scorer: Callable[[], BatchScorer],
    identity: dict[str, Any],
    image_size: int,
    suffixes: Sequence[str],
    class_name: str | None = None,
    settings: ScaleSettings = ScaleSettings(),
    output: OutputSettings = OutputSettings(),
    chunk_size: int = 1024,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    on_manifest: Callable[[Manifest], None] = lambda manifest: None,
) -> ManySummary:
    """Score every image the inputs name into ``out_dir`` (see the module docstring).

    identity: what makes two runs' scores comparable (model provenance and config, class
    name, threshold...): recorded in run.json and compared on ``resume``.
    on_manifest: called once the manifest is ready (before any scoring).

    Raises:
        OutputExistsError: results exist and neither ``overwrite`` nor ``resume``.
        RunMismatchError: ``resume`` with another identity, naming every difference.
        ManyInterrupted: on Ctrl-C, after the completed shards were kept.
    """
    if overwrite and resume:
        raise InvalidInputError("--overwrite and --resume exclude each other: --resume keeps the earlier rows, --overwrite deletes them")
    out_dir.mkdir(parents=True, exist_ok=True)
    with claim_output_folder(out_dir):
        _prepare_folder(out_dir, identity, overwrite, resume)
        (out_dir / OUTPUT_MARKER).touch()
        atomic_write_json(out_dir / RUN_NAME, {"identity": identity, "complete": False})
        manifest = read_manifest(out_dir) if resume else None
        if manifest is None:
            manifest = build_manifest(out_dir, inputs, lists, suffixes, chunk_size)
        on_manifest(manifest)
        drop_parts(out_dir)  # rows of chunks that a killed run left unfinished
        finished = done_chunks(out_dir)
        todo = [(file, number, count) for number, (file, count) in enumerate(manifest.chunks) if number not in finished]
        n_previous = sum(count for number, (_, count) in enumerate(manifest.chunks) if number in finished)
        counter = image_counter(manifest.n_images, "predict-many", initial=n_previous, enabled=show_progress)
        started = start_ray(settings) if todo else False
        try:
            score_manifest(todo, out_dir, make_scorer, image_size, class_name, settings, output, counter.update)
        except KeyboardInterrupt:
            raise ManyInterrupted(
                sum(count for number, (_, count) in enumerate(manifest.chunks) if number in done_chunks(out_dir)), manifest.n_images
            ) from None
        finally:
            counter.close()
            if started:
                import ray

                ray.shutdown()
        n_errors = count_errors(out_dir, range(len(manifest.chunks)))
        summary = ManySummary(out_dir, manifest.n_images, n_previous, n_errors, manifest.n_skipped, manifest.n_not_images)
        atomic_write_json(
            out_dir / RUN_NAME,
            {
                "identity": identity,
                "complete": True,
                "n_images": summary.n_images,
                "n_errors": n_errors,
                "n_skipped": summary.n_skipped,
                "n_not_images": summary.n_not_images,
            },
        )
    return summary
