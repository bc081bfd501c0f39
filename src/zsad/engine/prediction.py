"""Prediction on a user's own images: overlays, raw maps and a score table."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .predictor import Predictor
from ..fileio import check_can_write
from ..imageio import ImageReadError, read_image
from ..reports import write_scores
from ..fileio import atomic_save
from ..viz import overlay_heatmap, png_text, save_map_png16
from .runtime import progress

OVERLAY_DIR = "overlays"
MAP_DIR = "maps"


@dataclass
class PredictionSummary:
    rows: list[dict[str, Any]]
    written: list[Path]

    @property
    def n_errors(self) -> int:
        return sum(1 for row in self.rows if row["error"])


def output_names(paths: list[Path]) -> list[str]:
    """Unique, readable file stems: the path relative to the inputs' common folder with
    separators replaced by '__' (``good/001.png`` -> ``good__001``)."""
    if not paths:
        return []
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    names = ["__".join(p.relative_to(common).with_suffix("").parts) for p in resolved]
    if len(set(names)) != len(names):  # e.g. a.png and a.jpg in one folder
        names = ["__".join(p.relative_to(common).parts).replace(".", "_") for p in resolved]
    return names


def _read(path: Path) -> Image.Image | ImageReadError:
    try:
        return read_image(path)
    except ImageReadError as error:
        return error


def predict_files(
    predictor: Predictor,
    paths: list[Path],
    out_dir: Path,
    threshold: float,
    class_name: str | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    show_progress: bool = True,
    meta: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> PredictionSummary:
    """Score every image; write per image an overlay PNG (heat map + contour at
    ``threshold``) and the raw map as 16-bit PNG, then scores.csv / scores.json.

    Unreadable files get a row with their error; every other image is still processed.
    Nothing that exists is overwritten unless ``overwrite``. ``meta`` (method, backbone,
    weights...) is recorded in every file: scores.json, a column of scores.csv, and PNG
    text chunks. ``num_workers`` threads decode the images.
    """
    meta = meta or {}
    provenance = {key: meta[key] for key in ("method", "backbone", "weights") if key in meta}
    names = output_names(paths)
    targets = [out_dir / OVERLAY_DIR / f"{n}.png" for n in names] + [out_dir / MAP_DIR / f"{n}.png" for n in names]
    check_can_write(targets + [out_dir / "scores.csv", out_dir / "scores.json"], overwrite)
    (out_dir / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / MAP_DIR).mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    written: list[Path] = []
    order = list(zip(paths, names))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 0 else None
    read = pool.map if pool is not None else map
    for batch in progress(batches, "predict", total=len(batches), enabled=show_progress):
        readable: list[tuple[Path, str, Image.Image]] = []
        for (path, name), image in zip(batch, read(_read, [path for path, _ in batch])):
            if isinstance(image, ImageReadError):
                rows.append({"path": str(path), "score": None, "label": None, "error": image.reason, **provenance})
            else:
                readable.append((path, name, image))
        if not readable:
            continue
        predictions = predictor.predict([image for _, _, image in readable], class_name=class_name, batch_size=batch_size)
        for (path, name, image), prediction in zip(readable, predictions):
            overlay = out_dir / OVERLAY_DIR / f"{name}.png"
            raw = out_dir / MAP_DIR / f"{name}.png"
            picture = overlay_heatmap(image, prediction.anomaly_map, threshold=threshold)
            atomic_save(overlay, lambda tmp, picture=picture: picture.save(tmp, format="PNG", pnginfo=png_text(provenance)))
            save_map_png16(raw, prediction.anomaly_map, metadata=provenance)
            written += [overlay, raw]
            rows.append(
                {
                    "path": str(path),
                    "score": prediction.score,
                    "label": int(prediction.score >= threshold),
                    "error": "",
                    **provenance,
                }
            )
    if pool is not None:
        pool.shutdown()
    position = {str(path): i for i, path in enumerate(paths)}
    rows.sort(key=lambda row: position[row["path"]])
    written += write_scores(rows, out_dir, overwrite=True, extra={**meta, "threshold": threshold})
    return PredictionSummary(rows=rows, written=written)
