"""`zsad export`: the whole detector as one ONNX file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt


def register(app: typer.Typer) -> None:
    from . import console, friendly_errors, load_predictor

    @app.command()
    @friendly_errors
    @opt.option_group("model", opt.ModelOptions)
    def export(
        out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write (weights over 2 GB go to external data files beside it).")],
        model: opt.ModelOptions,
        opset: Annotated[int, typer.Option(min=14, help="ONNX opset version.")] = 17,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """Export the detector, backbone included, to ONNX: input `images` (B, 3, S, S)
        CLIP-normalised, outputs `anomaly_map` (B, S, S) and `score` (B,). The batch size is
        free (or 1 for a method that builds per-image prompts), the image size fixed; the text features of the prompt words (--class-name,
        default 'object') are stored in the file. Run it with `zsad predict --onnx FILE` or
        any ONNX runtime."""
        from ..engine.onnx_export import export_onnx

        if out.exists() and not overwrite:
            raise ValueError(f"{out} exists; pass --overwrite to replace it")
        predictor = load_predictor(model)
        words = predictor.class_names.resolve(None)
        detector = predictor.detector
        check = export_onnx(detector, words, out, meta=detector.provenance(), opset=opset)
        console.print(f"exported {detector.name} ({predictor.image_size} px, prompts for '{words}') to {out}")
        console.print(
            f"onnxruntime vs torch on {check.batch_size} random images: max |diff| map {check.map_difference:.2e}, "
            f"score {check.score_difference:.2e}; batch size "
            + ("free" if check.dynamic_batch else "1 (this method's forward traces image by image; runtimes loop)")
        )


def load_onnx_predictor(onnx: Path, model: opt.ModelOptions, reference: Path | None):
    """`zsad predict --onnx`: the onnxruntime predictor and the metadata its outputs record.
    Options that only make sense for a torch model are refused, not ignored."""
    from ..engine.onnx_export import OnnxPredictor
    from ..text import ClassNames

    fixed = (model.method, model.checkpoint, model.config, model.backbone, model.weights, model.image_size, reference)
    if any(option is not None for option in fixed):
        raise ValueError(
            "--onnx runs the exported model as it is: drop --method/--checkpoint/--config/--backbone/--weights/"
            "--image-size/--reference (they were fixed by `zsad export`)"
        )
    predictor = OnnxPredictor(onnx)
    words = predictor.meta["class_words"]
    if model.class_name is not None and ClassNames.load(model.class_names, model.class_name).resolve(None) != words:
        raise ValueError(f"{onnx} was exported for '{words}'; run `zsad export --class-name '{model.class_name}'` for other prompts")
    keys = ("method", "backbone", "weights", "image_size", "pipeline_check")
    return predictor, {**{key: predictor.meta[key] for key in keys if key in predictor.meta}, "onnx": str(onnx), "class_words": words}
