"""Scoring millions of images on Ray Data: `zsad predict-many`.

zsad writes no scheduler: Ray Data streams the work through three stages.

1. Tasks read the manifest's chunks (:mod:`zsad.engine.path_manifest`), a block per
   chunk, only those without an output shard (so ``--resume`` skips every path already
   scored).
2. CPU tasks decode each image at reduced size for the model
   (:func:`zsad.imageio.read_image_reduced`, as `zsad predict` does); an unreadable
   file becomes a row with the reason.
3. A pool of scoring actors, each holding one model (one per GPU, or N on CPUs), scores
   the decoded images and writes the maps and overlays if asked.

The actors write the result rows themselves; the driver receives only how many rows of
which chunk were written, and joins each complete chunk into a Parquet shard
(:mod:`zsad.engine.score_shards`): its memory holds one chunk at most, not the run. Ray
starts locally inside the call unless ``ray_address`` names a running cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image

from ..calibration import ClassCalibration
from ..imageio import ImageReadError, read_image, read_image_reduced
from ..map_files import write_overlay, write_raw_map
from .score_shards import SHARD_SCHEMA, ShardAssembler, write_part

__all__ = [
    "BatchScorer",
    "OutputSettings",
    "ScaleSettings",
    "ScoringActor",
    "decode_for_model",
    "read_chunks",
    "score_manifest",
    "start_ray",
]

# At most this many blocks of chunk numbers: Ray's bookkeeping per block stays bounded.
_READ_BLOCKS = 200
MAP_DIR = "maps"
OVERLAY_DIR = "overlays"


class BatchScorer(Protocol):
    """What a scoring actor needs of a model: its input side and scores + maps of a batch."""

    image_size: int

    def score_and_map(self, images: Sequence[Image.Image], class_name: str | None = None) -> tuple[list[float], np.ndarray]:
        """RGB images of any size -> their scores and maps ``(B, S, S)`` at the input side S."""


@dataclass(frozen=True)
class ScaleSettings:
    """How the work is spread. actors: scoring actors (models in memory at once);
    gpus_per_actor: 1 for one GPU each, 0 for CPU actors; cpus_per_actor: CPU cores an
    actor reserves (and its torch threads on the CPU); decode_cpus: cores a decoding task
    reserves; batch_size: images per forward pass; ray_address: a cluster to join (None:
    start Ray inside this process's machine and stop it at the end)."""

    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    decode_cpus: float = 0.5
    batch_size: int = 8
    ray_address: str | None = None


@dataclass(frozen=True)
class OutputSettings:
    """threshold: the label's level; save_maps / save_overlays: write OUT/maps, OUT/overlays
    (16-bit raw maps and readable overlays, as `zsad predict`); metadata: written into the
    PNGs' text chunks; calibration: a calibration entry (its p-values fill the p_value
    column, its pixel threshold draws the overlays' contour), or None."""

    threshold: float = 0.5
    save_maps: bool = False
    save_overlays: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    calibration: ClassCalibration | None = None


def read_chunks(batch, folder: str):
    """Stage 1: chunk numbers (an ``id`` column) -> their rows (path, chunk, index), read
    from ``folder``'s chunk files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .path_manifest import SCHEMA, chunk_file

    tables = [pq.read_table(chunk_file(Path(folder), number)) for number in batch.column("id").to_pylist()]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def decode_for_model(batch: dict[str, np.ndarray], side: int) -> dict[str, np.ndarray]:
    """Stage 2: read each path at reduced size for a model of input ``side``.

    batch: path, chunk, index (B,). Adds pixels (B,) of ``(h, w, 3)`` uint8 arrays
    (``(0, 0, 3)`` for an unreadable file), full_height, full_width (B,) and error (B,)
    ("" when read)."""
    pixels, heights, widths, errors = [], [], [], []
    for path in batch["path"]:
        try:
            image, (width, height) = read_image_reduced(str(path), side)
        except ImageReadError as error:
            pixels.append(np.zeros((0, 0, 3), np.uint8))
            heights.append(0)
            widths.append(0)
            errors.append(error.reason)
            continue
        pixels.append(np.asarray(image))
        heights.append(height)
        widths.append(width)
        errors.append("")
    column = np.empty(len(pixels), dtype=object)
    column[:] = pixels
    return {
        **batch,
        "pixels": column,
        "full_height": np.asarray(heights, np.int64),
        "full_width": np.asarray(widths, np.int64),
        "error": np.asarray(errors, dtype=object),
    }


def result_file(folder: str, chunk: int, index: int, path: str) -> str:
    """Where an image's map or overlay goes, relative to OUT: one folder per chunk, the
    image's place in the chunk first (unique), then its name (readable)."""
    return f"{folder}/{chunk:06d}/{index:06d}-{Path(path).stem}.png"


class ScoringActor:
    """Stage 3, one model per actor: decoded batch -> result rows, written as parts of
    their chunks (:func:`zsad.engine.score_shards.write_part`); returns what it wrote:
    chunk and rows (K,) for the K chunks of the batch.

    make_scorer: a picklable callable building the model on this actor's device (called
    once, in the actor); torch_threads: CPU threads for torch (None: leave torch's)."""

    def __init__(
        self,
        make_scorer: Callable[[], BatchScorer],
        out_dir: str,
        class_name: str | None,
        output: OutputSettings,
        torch_threads: int | None = None,
    ):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.scorer = make_scorer()
        self.out_dir = Path(out_dir)
        self.class_name = class_name
        self.output = output

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        readable = [i for i, error in enumerate(batch["error"]) if not error]
        scores: dict[int, float] = {}
        if readable:
            images = [Image.fromarray(batch["pixels"][i]) for i in readable]
            values, maps = self.scorer.score_and_map(images, class_name=self.class_name)
            for i, score, low in zip(readable, values, maps):
                scores[i] = score
                self._write_pictures(batch, i, images[readable.index(i)], score, low)
        n = len(batch["path"])
        threshold = self.output.threshold
        calibration = self.output.calibration
        p_values = dict(zip(scores, calibration.p_values(scores.values()).tolist())) if calibration and scores else {}
        rows = {
            "path": [str(path) for path in batch["path"]],
            "score": [scores.get(i) for i in range(n)],
            "label": [None if i not in scores else int(scores[i] >= threshold) for i in range(n)],
            "p_value": [p_values.get(i) for i in range(n)],
            "error": [str(error) for error in batch["error"]],
            "map": [self._name(MAP_DIR, batch, i) if i in scores and self.output.save_maps else "" for i in range(n)],
            "overlay": [self._name(OVERLAY_DIR, batch, i) if i in scores and self.output.save_overlays else "" for i in range(n)],
        }
        table = pa.table(rows, schema=SHARD_SCHEMA)
        chunks = np.asarray(batch["chunk"], np.int64)
        written = sorted(set(chunks.tolist()))
        for chunk in written:
            write_part(self.out_dir, chunk, table.filter(pa.array(chunks == chunk)))
        return {"chunk": np.asarray(written, np.int64), "rows": np.asarray([int((chunks == chunk).sum()) for chunk in written], np.int64)}

    @staticmethod
    def _name(folder: str, batch: dict[str, np.ndarray], i: int) -> str:
        return result_file(folder, int(batch["chunk"][i]), int(batch["index"][i]), str(batch["path"][i]))

    def _write_pictures(self, batch: dict[str, np.ndarray], i: int, reduced: Image.Image, score: float, low: np.ndarray) -> None:
        size_hw = (int(batch["full_height"][i]), int(batch["full_width"][i]))
        if self.output.save_maps:
            write_raw_map(self.out_dir / self._name(MAP_DIR, batch, i), low, size_hw, self.output.metadata)
        if self.output.save_overlays:
            full = reduced if reduced.size == size_hw[::-1] else read_image(str(batch["path"][i]))
            calibration = self.output.calibration
            write_overlay(
                self.out_dir / self._name(OVERLAY_DIR, batch, i),
                full,
                low,
                score,
                self.output.threshold,
                self.output.metadata,
                contour_threshold=calibration.pixel_threshold if calibration else None,
            )


def _torch_threads(settings: ScaleSettings) -> int | None:
    return None if settings.gpus_per_actor else max(1, int(settings.cpus_per_actor))


def score_manifest(
    chunk_files: Sequence[tuple[Path, int, int]],
    out_dir: Path,
    make_scorer: Callable[[], BatchScorer],
    image_size: int,
    class_name: str | None,
    settings: ScaleSettings,
    output: OutputSettings,
    on_rows: Callable[[int], None] = lambda n: None,
) -> ShardAssembler:
    """Score the given chunks (file, chunk number, number of paths) and write a shard per
    chunk into ``out_dir``; ``on_rows(n)`` is called as rows are written (progress). Ray
    must be initialised (see :func:`start_ray`); ``out_dir`` must be on storage that every
    node of the cluster sees. Returns the assembler (count of rows).
    A KeyboardInterrupt leaves every completed shard in place."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Per-block statistics would reach the driver in amounts that grow with the run.
    context.enable_auto_log_stats = False
    context.enable_stats_summary_collection = False
    context.enable_get_object_locations_for_metrics = False
    assembler = ShardAssembler(out_dir, {number: count for _, number, count in chunk_files})
    if not chunk_files:
        return assembler
    # Only chunk numbers leave the driver, in at most _READ_BLOCKS blocks: each task reads
    # its chunk files itself (the driver holds neither paths nor a block per chunk).
    numbers = [number for _, number, _ in chunk_files]
    folder = chunk_files[0][0].parent
    dataset = ray.data.from_items([{"id": number} for number in numbers], override_num_blocks=min(len(numbers), _READ_BLOCKS))
    dataset = dataset.map_batches(
        read_chunks,
        fn_kwargs={"folder": str(folder)},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=settings.decode_cpus,
    )
    dataset = dataset.map_batches(
        decode_for_model,
        fn_kwargs={"side": image_size},
        batch_size=settings.batch_size,
        batch_format="numpy",
        num_cpus=settings.decode_cpus,
    )
    dataset = dataset.map_batches(
        ScoringActor,
        fn_constructor_kwargs={
            "make_scorer": make_scorer,
            "out_dir": str(out_dir),
            "class_name": class_name,
            "output": output,
            "torch_threads": _torch_threads(settings),
        },
        batch_size=settings.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        num_cpus=settings.cpus_per_actor,
        num_gpus=settings.gpus_per_actor or None,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"ray\.")  # Ray's advice on pool sizes is for its own users
        for written in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for chunk, n_rows in zip(written["chunk"].tolist(), written["rows"].tolist()):
                assembler.add(chunk, n_rows)
                on_rows(n_rows)
    return assembler


def start_ray(settings: ScaleSettings) -> bool:
    """Connect to ``settings.ray_address``, or start Ray on this machine; returns whether
    this call started it (and so must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines between zsad's own
    return True
