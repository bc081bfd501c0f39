"""`zsad demo`: the offline end-to-end run with the tiny random-weight model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .console import console
from .model_loading import panel_replaces_random_warning


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the generated data and all results.")] = Path("zsad-demo"),
    image_size: Annotated[int, typer.Option(min=opt.MIN_IMAGE_SIZE, help="Input side for the tiny model (patch grid: side // 8).")] = 128,
    epochs: Annotated[int, typer.Option(min=1, help="MoECLIP training epochs on the generated training categories.")] = 2,
    device: opt.Device = "auto",
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Offline end-to-end run with the tiny random-weight model (no download): generate
    data, evaluate the baseline, train MoECLIP briefly and evaluate it on unseen
    categories, predict. Its numbers are a pipeline check, not a result."""
    from ..demo import run_demo

    with panel_replaces_random_warning():
        run_demo(out, image_size=image_size, device=device, overwrite=overwrite, show_progress=not quiet, console=console, epochs=epochs)
