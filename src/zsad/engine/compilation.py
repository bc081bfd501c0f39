"""``--compile``: a detector's inference and training calls under ``torch.compile``.

What is compiled is the method's ``detect`` (images and prompt *tensors*): the prompt
words become tensors through ``prompt_inputs`` eagerly first, so new class names never
recompile. Shapes are static (``dynamic=False``): inference pads a short batch to the
batch size it reserved (repeating its last image) and drops the padding from the
results, so a run with one batch size compiles one graph.

Modes (``COMPILE_MODES``): ``off`` (eager, the default), ``default`` (inductor's fused
kernels), ``max-autotune`` (also searches the fastest matmul and convolution kernels,
and captures CUDA graphs on GPUs), ``reduce-overhead`` (CUDA graphs: the whole call
replayed with one launch; CUDA only).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch

from ..errors import InvalidInputError
from ..methods.base import AnomalyDetector
from ..settings import COMPILE_MODES

# Modes that capture CUDA graphs on a GPU; the first of them exists only there.
CUDA_ONLY_MODES = ("reduce-overhead",)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile_mode(mode: str, device: torch.device) -> None:
    """Raise ValueError for an unknown mode, or a CUDA-graph mode on a device without CUDA."""
    if mode not in COMPILE_MODES:
        raise InvalidInputError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode in CUDA_ONLY_MODES and device.type != "cuda":
        raise InvalidInputError(
            f"--compile {mode} captures CUDA graphs and needs a CUDA device, not {device.type}; "
            "use --compile default (or off) there"
        )


def check_compile(mode: str, device: torch.device, detector: AnomalyDetector) -> None:
    """:func:`check_compile_mode`, and for a mode other than off :func:`check_compilable`."""
    check_compile_mode(mode, device)
    if mode != "off":
        check_compilable(detector)


def check_compilable(detector: AnomalyDetector) -> None:
    """Raise ValueError when the method has no ``detect`` for ``--compile`` to capture."""
    if not type(detector).compilable():
        raise InvalidInputError(
            f"--compile: method '{detector.name}' overrides forward instead of implementing detect "
            "(the call --compile captures), so it runs eagerly only; use --compile off"
        )


def compile_function(function: Callable, mode: str, backend: str | Callable = "inductor") -> Callable:
    """``torch.compile`` with static shapes. ``backend``: inductor (what users get), or a
    test backend such as ``aot_eager``, which runs the captured graph as it is (the mode
    then only matters to inductor and is not passed)."""
    if backend == "inductor":
        return torch.compile(function, backend=backend, dynamic=False, mode=None if mode == "default" else mode)
    return torch.compile(function, backend=backend, dynamic=False)


def in_process_compile() -> contextlib.AbstractContextManager:
    """Inductor compiles in this process, without its pool of worker threads and processes:
    a data-loading worker forked afterwards (a new loader, e.g. every training epoch) would
    inherit that pool's threads mid-flight and may hang or abort. Compiling takes longer on
    many cores; the compiled code is the same."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(compile_threads=1)


def mark_cuda_graph_step() -> None:
    """Tell torch's CUDA graphs that a new call begins: the outputs of the previous replay
    may be overwritten (torch.compiler's name from torch 2.2 on, inductor's own before)."""
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    if mark is None:
        from torch._inductor.cudagraph_trees import mark_step_begin as mark
    mark()


def pad_batch(images: torch.Tensor, class_names: Sequence[str], size: int) -> tuple[torch.Tensor, list[str]]:
    """images (B, 3, S, S) and their words (B,) -> (size, 3, S, S) and (size,), the last
    image and word repeated (size >= B)."""
    missing = size - images.shape[0]
    if missing <= 0:
        return images, list(class_names)
    padding = images[-1:].expand(missing, *images.shape[1:])
    return torch.cat([images, padding]), [*class_names, *[class_names[-1]] * missing]


class InferenceCall:
    """A detector's inference call: (images (B, 3, S, S), class names (B,)) -> (maps
    (B, S, S), scores (B,)). ``off``: exactly ``detector(images, class_names)``. Otherwise
    ``detect`` compiled once per batch size: each call is padded to :attr:`batch_size`
    (the largest of the reserved and the seen sizes), so the last, short batch of a run
    reuses the graph. The first call compiles (slow); a larger batch compiles again.
    ``backend``: see :func:`compile_function` (not a user option)."""

    def __init__(self, detector: AnomalyDetector, device: torch.device, mode: str = "off", backend: str | Callable = "inductor"):
        check_compile(mode, device, detector)
        self.detector = detector
        self.mode = mode
        self.batch_size = 0
        self._compiled = None if mode == "off" else compile_function(self._maps_and_scores, mode, backend)

    def reserve(self, batch_size: int) -> None:
        """Pad every later call to at least ``batch_size`` images (no effect when off)."""
        self.batch_size = max(self.batch_size, batch_size)

    def _maps_and_scores(self, images: torch.Tensor, prompts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.detector.detect(images, prompts)
        return output.anomaly_map, output.pred_score

    def __call__(self, images: torch.Tensor, class_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled is None:
            output = self.detector(images, class_names)
            return output.anomaly_map, output.pred_score
        count = images.shape[0]
        self.reserve(count)
        images, names = pad_batch(images, class_names, self.batch_size)
        prompts = self.detector.prompt_inputs(names, images.device)
        if self.mode in CUDA_GRAPH_MODES:
            mark_cuda_graph_step()  # the previous call's outputs are done with
        with in_process_compile():
            maps, scores = self._compiled(images, prompts)
        if self.mode in CUDA_GRAPH_MODES:
            # Copies: a CUDA graph's outputs live in memory that its next replay overwrites.
            return maps[:count].clone(), scores[:count].clone()
        return maps[:count], scores[:count]


class TrainingCall:
    """The training forward pass (forward and losses; backward and the optimiser step stay
    eager): ``model(images, class_names, masks, labels)`` -> DetectorOutput, ``model`` being
    the detector or its DDP wrapper. Compiled, the prompt words become tensors first and
    the compiled module is called with them (``prompts=``), never with the words. The
    backward pass compiles at its first call: run the loop within :func:`in_process_compile`."""

    def __init__(
        self, model: torch.nn.Module, detector: AnomalyDetector, device: torch.device, mode: str = "off",
        backend: str | Callable = "inductor",
    ):
        check_compile(mode, device, detector)
        self.model = model
        self.detector = detector
        self.mode = mode
        self._compiled = None if mode == "off" else compile_function(model, mode, backend)

    def __call__(self, images: torch.Tensor, class_names: Sequence[str], masks: torch.Tensor, labels: torch.Tensor):
        if self._compiled is None:
            return self.model(images, class_names, masks, labels)
        prompts = self.detector.prompt_inputs(class_names, images.device)
        if self.mode in CUDA_GRAPH_MODES:
            mark_cuda_graph_step()
        return self._compiled(images, None, masks, labels, prompts=prompts)
