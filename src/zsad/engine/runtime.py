"""Device, precision and progress helpers shared by the loops."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, TypeVar

import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..settings import PRECISIONS

T = TypeVar("T")


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None -> CUDA when available, else CPU; otherwise the named device."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(
            f"--device {name} is not a device zsad can use; pass auto, cpu, cuda or cuda:N (the GPU's number)"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"--device {name}: zsad runs on cpu, cuda (cuda:N) or mps, not {device.type}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count() > 0:
        raise InvalidInputError(
            f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {name} was asked for but CUDA is not available here; use --device cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast. bf16: bfloat16 autocast on the device's type (CUDA or CPU)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in ("cuda", "cpu"):
        raise InvalidInputError(f"--precision bf16 runs on CUDA or the CPU, not on {device.type}; use fp32 there")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def check_training_precision(device: torch.device, precision: str) -> None:
    """Training in bf16 is for GPUs: on the CPU, autocast's backward pass is slower than fp32."""
    autocast(device, precision)
    if precision == "bf16" and device.type != "cuda":
        raise InvalidInputError("--precision bf16 trains on GPUs only; train in fp32 on the CPU (bf16 inference works there)")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_workers(processes_per_machine: int = 1, cpus: int | None = None, cap: int = 8) -> int:
    """Data-loading worker processes per training process when none are asked for: the
    cores left after the training processes themselves, shared between them, at most
    ``cap``; 0 (load in the main process) on a single core, where a worker could only
    compete with the step it feeds."""
    cpus = available_cpus() if cpus is None else cpus
    return max(0, min(cap, cpus // max(1, processes_per_machine) - 1))


def progress(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """A progress bar on stderr (hidden when disabled)."""
    return iter(tqdm(items, desc=description, total=total, disable=not enabled, file=sys.stderr, dynamic_ncols=True))


def image_counter(total: int, description: str, initial: int = 0, enabled: bool = True) -> tqdm:
    """A progress bar on stderr that counts images (``update(n)`` after each batch of n)."""
    return tqdm(total=total, initial=initial, desc=description, unit="img", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
