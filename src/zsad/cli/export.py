"""`zsad export`: the whole detector as one ONNX file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InvalidInputError
from . import calibrate as cal
from . import options as opt
from .console import console
from .model_loading import check_model_options, load_predictor


def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write (weights over 2 GB go to external data files beside "
                                                          "it).")],
    model: opt.ModelOptions,
    opset: Annotated[int, typer.Option(min=14, help="ONNX opset version.")] = 17,
    calibration: cal.CalibrationFile = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Export the detector, backbone included, to ONNX: input `images` (B, 3, S, S)
    CLIP-normalised, outputs `anomaly_map` (B, S, S) and `score` (B,). The batch size is
    free (or 1 for a method that builds per-image prompts), the image size fixed; the text features of the prompt words (--class-name,
    default 'object') are stored in the file. Run it with `zsad predict --onnx FILE` or
    any ONNX runtime. With --calibration (made for this model and prompt words) the
    file's metadata also carries the calibrated thresholds and normal scores."""
    if out.exists() and not overwrite:
        raise InvalidInputError(f"{out} exists; pass --overwrite to replace it")
    check_model_options(model)  # before torch is imported
    from ..engine.onnx_export import export_onnx

    predictor = load_predictor(model)
    words = predictor.class_names.resolve(None)
    detector = predictor.detector
    meta = {**detector.provenance(), "scoring_identity": cal.predictor_identity(predictor)}
    if calibration is not None:
        entry = cal.load_for_model(calibration, meta["scoring_identity"], words)
        meta.update(cal.calibration_meta(calibration, entry), calibration_scores=entry.scores)
    check = export_onnx(detector, words, out, meta=meta, opset=opset)
    console.print(f"exported {detector.name} ({predictor.image_size} px, prompts for '{words}') to {out}")
    console.print(
        f"onnxruntime vs torch on {check.batch_size} random images: max |diff| map {check.map_difference:.2e}, "
        f"score {check.score_difference:.2e}; batch size "
        + ("free" if check.dynamic_batch else "1 (this method's forward traces image by image; runtimes loop)")
    )


def load_onnx_predictor(onnx: Path, model: opt.ModelOptions, reference: Path | None):
    """`zsad predict --onnx`: the onnxruntime scorer and the metadata its outputs record.
    The model was fixed by `zsad export`: --method/--checkpoint/--config/--reference are
    refused, and --backbone/--weights/--image-size/--class-name must agree with the file."""
    from ..engine.scorer_spec import ScorerSpec

    if model.config is not None:
        raise InvalidInputError("--onnx runs the exported model as it is: drop --config (it was fixed by `zsad export`)")
    spec = ScorerSpec(
        method=model.method, checkpoint=None if model.checkpoint is None else str(model.checkpoint), backbone=model.backbone,
        weights=model.weights, image_size=model.image_size, class_name=model.class_name,
        class_names_file=None if model.class_names is None else str(model.class_names), onnx=str(onnx),
        reference=None if reference is None else str(reference),
    )
    predictor = spec.build()
    return predictor, {**predictor.provenance(), "onnx": str(onnx), "class_words": predictor.meta["class_words"]}
