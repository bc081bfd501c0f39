"""Shared pieces of the benchmarks: device/precision options and a synchronised timer.

Every benchmark runs on CUDA and on the CPU (``--device auto``), takes ``--precision``
and ``--batch-size``, and prints ratios measured in one run (passes interleaved).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from typing import Callable

import torch

from zsad.engine.runtime import autocast, resolve_device


def add_common_options(parser: argparse.ArgumentParser, batch_size: int = 1) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 = autocast")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads, silence the random-weights warning, seed; return the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    torch.manual_seed(0)
    return resolve_device(args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call, the device synchronised
    before and after."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    passes: dict[str, Callable[[], object]], device: torch.device, precision: str, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each pass, the passes interleaved (A B C A B C ...) so a
    change in machine load hits all of them alike. Runs under inference mode and the
    precision's autocast; the device is synchronised around every call."""
    times: dict[str, list[float]] = {name: [] for name in passes}
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(warmup):
            for function in passes.values():
                function()
        synchronize(device)
        for _ in range(repeats):
            for name, function in passes.items():
                synchronize(device)
                start = time.perf_counter()
                function()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return times


def cuda_graphed(function: Callable[[], object], device: torch.device, precision: str) -> Callable[[], None]:
    """Capture ``function()`` (fixed shapes, no host synchronisation) in a CUDA graph after
    three warm-up calls on a side stream; returns the graph's replay. Captured under
    inference mode and the precision's autocast without its weight-cast cache (which a
    graph cannot hold); the outputs stay in the graph's static memory."""
    if device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    low_precision = (
        torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if precision == "bf16" else contextlib.nullcontext()
    )
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream(device)
    with torch.inference_mode(), low_precision:
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                function()
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.cuda.graph(graph):
            function()
    return graph.replay


def median(values: list[float]) -> float:
    return statistics.median(values)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"
