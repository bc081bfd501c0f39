"""The HTTP service: ``POST /predict``, ``GET /health``, ``GET /info`` and a web page at ``/``.

``POST /predict`` takes one or more images in the multipart field ``file`` and answers::

    {"threshold": 0.5, "results": [{"filename": "a.png", "score": 0.71, "label": 1,
      "width": 640, "height": 480, "overlay_png": "<base64 PNG>"}, ...]}

Errors are JSON ``{"detail": "..."}``: 400 (not an image, truncated, empty upload, no
``file`` field), 413 (request or image too large, too many files), 503 with
``Retry-After`` (queue full). A bad upload never stops the service.
"""
from __future__ import annotations

import asyncio
import base64
import io
import tempfile
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from ..engine.scorer import Scorer
from ..errors import ZsadError
from ..imageio import ImageReadError, read_image
from ..viz import overlay_heatmap
from .batching import BatchingQueue, QueueFullError

COLOUR_MAP = "jet"  # the overlays' colour map; the page draws its colour bar from /info


@dataclass(frozen=True)
class ServeSettings:
    """threshold: score at or above which an image is labelled anomalous (and the overlay
    contour level); max_batch / batch_window_ms: the batching queue; max_queue: images
    allowed to wait; max_request_bytes, max_files, max_image_pixels: upload limits;
    retry_after_s: the Retry-After of a 503."""

    threshold: float = 0.5
    max_batch: int = 8
    batch_window_ms: float = 10.0
    max_queue: int = 64
    max_request_bytes: int = 32 * 1024 * 1024
    max_files: int = 16
    max_image_pixels: int = 40_000_000
    retry_after_s: int = 1


class UploadError(ZsadError, ValueError):
    """A client mistake: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_upload(name: str, data: bytes, max_pixels: int) -> Image.Image:
    """Upload bytes -> 8-bit RGB image, with the same decoding as files on disk."""
    if not data:
        raise UploadError(400, f"{name}: empty upload")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Exception:
        width = height = 0  # not something Pillow recognises: read_image says why (or reads a TIFF)
    if width * height > max_pixels:
        raise UploadError(413, f"{name}: {width} x {height} pixels exceeds the limit of {max_pixels} pixels")
    suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
    with tempfile.TemporaryDirectory(prefix="zsad-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            image = read_image(path)
        except ImageReadError as error:
            # The decoders name the file they read: the server's temporary copy, not the client's name.
            reason = error.reason.replace(str(path), name).replace(folder, "")
            raise UploadError(400, f"{name}: not a readable image ({reason})") from None
    if image.width * image.height > max_pixels:
        raise UploadError(413, f"{name}: {image.width} x {image.height} pixels exceeds the limit of {max_pixels} pixels")
    return image


def overlay_png_base64(image: Image.Image, anomaly_map, threshold: float) -> str:
    buffer = io.BytesIO()
    overlay_heatmap(image, anomaly_map, threshold=threshold, cmap=COLOUR_MAP).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def colour_stops(count: int = 11) -> list[str]:
    """``count`` hex colours of the overlay colour map from 0 to 1 (for the colour bar)."""
    import matplotlib

    cmap = matplotlib.colormaps[COLOUR_MAP]
    return ["#%02x%02x%02x" % tuple(int(round(255 * c)) for c in cmap(i / (count - 1))[:3]) for i in range(count)]




def page_html() -> str:
    return (resources.files("zsad") / "serve" / "page.html").read_text(encoding="utf-8")


def create_app(predictor: Scorer, settings: ServeSettings | None = None, meta: dict[str, Any] | None = None, calibration=None):
    """A FastAPI app serving ``predictor`` (any :class:`zsad.engine.scorer.Scorer`: the
    torch predictor or an ONNX file's). /info shows its provenance (method, backbone,
    weights...), updated with ``meta`` (e.g. few-shot references). ``calibration`` (a
    :class:`zsad.calibration.ClassCalibration` checked against the model): its image
    threshold labels the images, its pixel threshold draws the contours, and every result
    gets a ``p_value``."""
    settings = settings or ServeSettings()
    if calibration is not None:
        settings = replace(settings, threshold=calibration.image_threshold)
    contour = settings.threshold if calibration is None else calibration.pixel_threshold
    queue = BatchingQueue(
        lambda images: predictor.predict(images, batch_size=settings.max_batch),
        max_batch=settings.max_batch,
        window_s=settings.batch_window_ms / 1000,
        max_queue=settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(_app):
        queue.start()
        yield
        await queue.stop()

    app = FastAPI(title="zsad", summary="Zero-shot anomaly detection with CLIP", lifespan=lifespan)
    app.state.queue = queue
    info = {**predictor.provenance(), **(meta or {}), "image_size": predictor.image_size, "threshold": settings.threshold,
            "limits": asdict(settings), "colour_map": COLOUR_MAP, "colour_stops": colour_stops()}

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "waiting": queue.waiting, "forward_passes": queue.passes,
                "images_scored": queue.images_done, "largest_batch": queue.largest_batch}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        return info

    @app.post("/predict")
    async def predict(request: Request, overlay: bool = True):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_request_bytes:
            return refuse(413, f"request of {int(declared)} bytes exceeds the limit of {settings.max_request_bytes} bytes")
        try:
            form = await request.form(max_files=settings.max_files, max_part_size=settings.max_request_bytes)
        except Exception as error:  # not multipart, a broken body, a limit of the form parser
            reason = str(getattr(error, "detail", error))
            if "Too many files" in reason:
                return refuse(413, f"too many files: at most {settings.max_files} images per request")
            if "maximum size" in reason.lower():
                return refuse(413, f"a part of the request exceeds {settings.max_request_bytes} bytes")
            return refuse(400, f"send images as multipart/form-data in the field 'file' ({reason})")
        uploads = [part for part in form.getlist("file") if hasattr(part, "read")]
        if not uploads:
            return refuse(400, "no image: send one or more files in the multipart field 'file'")
        blobs = [(upload.filename or f"image{i}", await upload.read()) for i, upload in enumerate(uploads)]
        if sum(len(data) for _, data in blobs) > settings.max_request_bytes:
            return refuse(413, f"uploads exceed the limit of {settings.max_request_bytes} bytes")
        try:
            images = await asyncio.to_thread(lambda: [decode_upload(n, d, settings.max_image_pixels) for n, d in blobs])
        except UploadError as error:
            return refuse(error.status, str(error))
        try:
            predictions = await queue.submit(images)
        except QueueFullError as error:
            return refuse(503, str(error), {"Retry-After": str(settings.retry_after_s)})
        overlays = await asyncio.to_thread(
            lambda: [overlay_png_base64(i, p.anomaly_map, contour) if overlay else None for i, p in zip(images, predictions)]
        )
        results = [
            {"filename": name, "score": p.score, "label": int(p.score >= settings.threshold),
             "width": image.width, "height": image.height, "overlay_png": png,
             **({"p_value": float(calibration.p_values([p.score])[0])} if calibration is not None else {})}
            for (name, _), image, p, png in zip(blobs, images, predictions, overlays)
        ]
        return {"threshold": settings.threshold, "pipeline_check": bool(info.get("pipeline_check")), "results": results}

    return app
