"""`zsad serve`: the detector as an HTTP service with a web page."""
from __future__ import annotations

from typing import Annotated

import typer

from . import calibrate as cal
from . import fewshot as fs
from . import options as opt
from .console import err_console
from .model_loading import check_model_options, compile_meta, load_predictor

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    model: opt.ModelOptions,
    host: Annotated[str, typer.Option(help="Address to bind. The default serves this machine only; another address (e.g. 0.0.0.0) exposes "
                                           "the service, which has no authentication, to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Score at or above which an image is labelled anomalous; also the overlays' contour level "
            "(default: 0.5, or the --calibration file's).",
        ),
    ] = None,
    calibration: cal.CalibrationFile = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images in one forward pass (requests are batched together).")] = 8,
    batch_window_ms: Annotated[float, typer.Option(min=0.0, help="How long the first waiting image waits for others to share its forward "
                                                                 "pass.")] = 10.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Most images waiting; beyond it requests get 503 with Retry-After.")] = 64,
    max_request_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body in MiB (413 beyond).")] = 32.0,
    max_files: Annotated[int, typer.Option(min=1, help="Most images in one request.")] = 16,
    max_image_megapixels: Annotated[float, typer.Option(min=0.001, help="Largest image in megapixels (413 beyond).")] = 40.0,
    reference: fs.Reference = None,
    fusion_weight: fs.FusionWeight = 0.5,
    compile: opt.Compile = "off",
) -> None:
    """Serve the detector over HTTP: POST /predict (multipart field `file`), GET /health,
    GET /info, and a web page at / to drop images on and see their overlays."""
    # Checked before torch is imported.
    if reference is not None:
        fs.reference_paths(reference)
    check_model_options(model)
    import uvicorn

    from ..methods.base import refuse_set_method
    from ..serve import ServeSettings, create_app

    predictor = load_predictor(model, compile)
    refuse_set_method(predictor.detector, "`zsad serve` (requests arrive one at a time)")
    meta = {**predictor.detector.provenance(), **compile_meta(compile)}
    entry, threshold = cal.for_run(calibration, threshold, predictor, meta, reference=reference)
    if reference is not None:
        predictor = fs.with_reference_folder(predictor, reference, fusion_weight, meta)
    predictor.reserve(max_batch)  # compiled: every forward pass runs --max-batch images
    settings = ServeSettings(
        threshold=threshold, max_batch=max_batch, batch_window_ms=batch_window_ms, max_queue=max_queue,
        max_request_bytes=int(max_request_mb * 1024 * 1024), max_files=max_files,
        max_image_pixels=int(max_image_megapixels * 1_000_000),
    )
    if host not in LOOPBACK_HOSTS:
        err_console.print(f"[bold yellow]warning:[/] binding {host}: the service is reachable from the network and has no authentication")
    uvicorn.run(create_app(predictor, settings, meta, calibration=entry), host=host, port=port, log_level="info")
