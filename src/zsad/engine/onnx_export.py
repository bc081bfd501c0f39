"""ONNX export of a whole detector (backbone included) and prediction with onnxruntime.

The exported graph maps ``images`` (B, 3, S, S), CLIP-normalised, S fixed at export, B
dynamic (or 1, see :func:`export_onnx`), to ``anomaly_map`` (B, S, S) and ``score`` (B,),
both in [0, 1]. The text
features of the chosen prompt words are computed once and stored in the graph as
constants, so the file needs neither the text encoder nor a tokenizer. Any method that
follows the :class:`~zsad.methods.base.AnomalyDetector` contract exports the same way:
the model is traced once with a batch of one image, whose text features then broadcast
over any batch size.

The zsad settings (method, backbone, weights, image size, prompt words) are kept in the
file's metadata. Files whose weights exceed protobuf's 2 GB limit are written with the
weights in external data files next to the ``.onnx`` file (keep them together).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoints import CheckpointError, check_config_fits
from ..clip_weights import canonical_weights
from ..data.transforms import EvalTransform
from ..errors import InvalidInputError, MissingInputError
from ..methods.base import AnomalyDetector, refuse_set_method
from .scorer import Scorer, file_digest

INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "score")
METADATA_KEY = "zsad"
DEFAULT_OPSET = 17


class OnnxExportError(InvalidInputError):
    """The model could not be exported or the ONNX file cannot be used."""


class _FixedPromptDetector(nn.Module):
    """images (B, 3, S, S) -> (anomaly_map (B, S, S), score (B,)) for fixed prompt words.
    Only for tracing with a batch of one image (the words list has one entry)."""

    def __init__(self, detector: AnomalyDetector, class_words: str):
        super().__init__()
        self.detector = detector
        self.class_words = class_words

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.detector(images, [self.class_words])
        return output.anomaly_map.float(), output.pred_score.float()


@dataclass
class ExportCheck:
    """Largest |onnxruntime - torch| difference on a batch of random images, and whether
    the graph takes any batch size (else one image per run)."""

    batch_size: int
    map_difference: float
    score_difference: float
    dynamic_batch: bool


def _addcdiv_symbolic(g, base, tensor1, tensor2, value):
    """ONNX form of ``torch.addcdiv`` (base + value * tensor1 / tensor2), which the
    TorchScript exporter lacks (the exporter passes the arguments by position)."""
    from torch.onnx import symbolic_helper

    quotient = g.op("Div", tensor1, tensor2)
    scale = symbolic_helper._maybe_get_const(value, "f")
    if not (isinstance(scale, float) and scale == 1.0):
        quotient = g.op("Mul", quotient, value if not isinstance(scale, float) else g.op("Constant", value_t=torch.tensor(scale)))
    return g.op("Add", base, quotient)


# aten ops without an ONNX form in the TorchScript exporter: name -> symbolic function
_MISSING_SYMBOLICS = {"aten::addcdiv": _addcdiv_symbolic}


@contextlib.contextmanager
def _missing_symbolics(opset: int) -> Iterator[None]:
    """Register the ONNX forms of :data:`_MISSING_SYMBOLICS` for one export only."""
    for name, function in _MISSING_SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, function, opset)
    try:
        yield
    finally:
        for name in _MISSING_SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


@contextlib.contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Switch inference shortcuts to their plain equivalents while tracing (each computes
    the same outputs): nn.MultiheadAttention's fused kernel (no ONNX form), and any expert
    dispatch other than ``"dense"`` (sparse or automatic: its shapes depend on the
    routing) for any module that has one."""
    fastpath = getattr(torch.backends, "mha", None)  # no such switch on older torch (2.1)
    previous = fastpath.get_fastpath_enabled() if fastpath is not None else None
    sparse = [(module, module.dispatch) for module in model.modules() if getattr(module, "dispatch", "dense") != "dense"]
    if fastpath is not None:
        fastpath.set_fastpath_enabled(False)
    for module, _ in sparse:
        module.dispatch = "dense"
    try:
        yield
    finally:
        if fastpath is not None:
            fastpath.set_fastpath_enabled(previous)
        for module, dispatch in sparse:
            module.dispatch = dispatch


def torchscript_exporter_options() -> dict[str, bool]:
    """The keyword that picks the TorchScript exporter where torch also has the dynamo-based
    one (newer torch, where ``dynamo`` may default to True); older torch (2.1) has only the
    TorchScript exporter and no such keyword."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(
    model: AnomalyDetector,
    class_words: str,
    out: Path,
    meta: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    check_batch: int = 2,
    tolerance: float = 1e-3,
) -> ExportCheck:
    """Write ``model`` (moved to the CPU, fp32, eval mode) as ONNX to ``out``, then run the
    file with onnxruntime on ``check_batch`` random images (a batch size other than the
    traced one) and compare with torch.

    The batch size is free in the graph when the method's forward traces that way. A
    method whose forward builds per-image Python lists (e.g. prompts conditioned on each
    image) traces to a graph for exactly one image: it is then exported with batch size 1,
    recorded in the metadata, and :class:`OnnxPredictor` runs its images one at a time.
    Raises OnnxExportError when neither graph matches torch within ``tolerance``.
    """
    refuse_set_method(model, "`zsad export` (an ONNX graph of one batch)")
    model = model.eval().float().cpu()
    size = model.backbone.image_size
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _convert(model, class_words, out, opset, dynamic_batch=True)
        _write_metadata(out, {**(meta or {}), "class_words": class_words, "image_size": size, "batch_size": None})
        return _check(model, class_words, out, check_batch, tolerance)
    except OnnxExportError:
        _convert(model, class_words, out, opset, dynamic_batch=False)
        _write_metadata(out, {**(meta or {}), "class_words": class_words, "image_size": size, "batch_size": 1})
        return _check(model, class_words, out, check_batch, tolerance)


def _convert(model: AnomalyDetector, class_words: str, out: Path, opset: int, dynamic_batch: bool) -> None:
    size = model.backbone.image_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    wrapper = _FixedPromptDetector(model, class_words).eval()
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    with torch.no_grad(), _traceable(model), _missing_symbolics(opset), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes read as constants: S is fixed
        warnings.filterwarnings("ignore", message="Constant folding")  # an exporter note, not a problem
        # The TorchScript exporter on purpose: it traces the prompt list at batch 1 and keeps
        # the batch dimension symbolic, which torch.export's shape guards refuse.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Generic indexing caveats; the onnxruntime-vs-torch check catches a wrong graph.
        warnings.filterwarnings("ignore", message=".*(aten::index|duplicated values in 'index').*")
        wrapper(example)  # fills the text-feature caches before tracing
        try:
            torch.onnx.export(
                wrapper, (example,), str(out), **torchscript_exporter_options(), opset_version=opset,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
            )
        except Exception as error:
            raise OnnxExportError(f"ONNX export of method '{model.name}' failed: {error}") from error


def _check(model: AnomalyDetector, class_words: str, out: Path, check_batch: int, tolerance: float) -> ExportCheck:
    size = model.backbone.image_size
    images = torch.randn(check_batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images, [class_words] * check_batch)
    runtime = OnnxPredictor(out)
    try:
        maps, scores = runtime.run(images)
    except Exception as error:
        raise OnnxExportError(f"the exported '{model.name}' fails on a batch of {check_batch} in onnxruntime: {error}") from error
    if maps.shape != expected.anomaly_map.shape or scores.shape != expected.pred_score.shape:
        raise OnnxExportError(
            f"the exported '{model.name}' returns {tuple(maps.shape)} maps for a batch of {check_batch}: "
            "its forward pass does not trace to a batch-independent graph"
        )
    check = ExportCheck(
        check_batch,
        (maps - expected.anomaly_map.float()).abs().max().item(),
        (scores - expected.pred_score.float()).abs().max().item(),
        runtime.dynamic_batch,
    )
    if max(check.map_difference, check.score_difference) > tolerance:
        raise OnnxExportError(
            f"the exported '{model.name}' differs from torch by {max(check.map_difference, check.score_difference):.2e} "
            f"on a batch of {check_batch}: its forward pass depends on the input in a way tracing cannot keep"
        )
    return check


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    onnx.save(proto, str(path))


class OnnxPredictor(Scorer):
    """An exported detector run by onnxruntime: the :class:`~zsad.engine.scorer.Scorer`
    of a ``zsad export`` file (its prompt words fixed at export)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise OnnxExportError("running ONNX models needs onnxruntime: pip install 'zsad[onnx]'") from error
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingInputError(f"ONNX model not found: {path}")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise OnnxExportError(f"{path} is not a usable ONNX model: {error}") from error
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise OnnxExportError(f"{path} was not written by `zsad export` (no zsad metadata)")
        self.path = path
        self.meta: dict[str, Any] = json.loads(stored)
        self.image_size = int(self.meta["image_size"])
        self.transform = EvalTransform(self.image_size)
        self._file_digest: str | None = None

    @property
    def dynamic_batch(self) -> bool:
        """False for a graph exported for one image at a time (see :func:`export_onnx`)."""
        return self.meta.get("batch_size") is None

    def check_fits(self, requested: dict[str, Any]) -> None:
        """Refuse settings the file was not exported with, by the one comparator of
        configs (:func:`zsad.checkpoints.check_config_fits`). ``requested``: any of
        backbone, weights, image_size, class_words; None entries are not compared."""
        stored = {key: self.meta.get(key) for key in requested}
        if "weights" in stored and stored["weights"] is not None:
            stored["weights"] = canonical_weights(str(stored["weights"]))
        if requested.get("weights") is not None:
            requested = {**requested, "weights": canonical_weights(requested["weights"])}
        try:
            check_config_fits(requested, stored, str(self.path), only_given=True, stored_name="the file")
        except CheckpointError as error:
            raise OnnxExportError(f"{error}\nRun `zsad export` again for these settings.") from None

    def provenance(self) -> dict[str, Any]:
        keys = ("method", "backbone", "weights", "image_size", "pipeline_check")
        return {key: self.meta[key] for key in keys if key in self.meta}

    def identity(self, class_name: str | None = None) -> dict[str, Any]:
        """The provenance, the file's content hash and its prompt words."""
        words = self.prompt_words(class_name)
        if self._file_digest is None:
            self._file_digest = file_digest(self.path)
        return {
            "runtime": "onnx",
            **self.provenance(),
            "onnx_sha256": self._file_digest,
            "class_words": words,
            "references": None,
            "calibration": None,
        }

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, S, S) normalised -> (maps (B, S, S), scores (B,)) as CPU tensors."""
        chunks = [images] if self.dynamic_batch else list(images.split(1))
        outputs = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk.float().cpu().numpy()}) for chunk in chunks]
        return torch.cat([torch.from_numpy(m) for m, _ in outputs]), torch.cat([torch.from_numpy(s) for _, s in outputs])

    def prompt_words(self, class_name: str | None = None) -> str:
        """The words fixed at export; ``class_name`` may only repeat them."""
        if class_name is not None and class_name != self.meta["class_words"]:
            raise InvalidInputError(
                f"this ONNX model was exported for '{self.meta['class_words']}'; export again with --class-name for '{class_name}'"
            )
        return self.meta["class_words"]

    def score_and_map(self, images: Sequence, class_name: str | None = None) -> tuple[list[float], np.ndarray]:
        """RGB PIL images -> (scores, maps (B, S, S) float32 at the model's input size).
        The prompt words are fixed at export; ``class_name`` may only repeat them."""
        self.prompt_words(class_name)
        maps, scores = self.run(torch.stack([self.transform(image, None)[0] for image in images]))
        return [float(score) for score in scores], maps.numpy()
