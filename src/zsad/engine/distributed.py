"""Multi-process training under ``torchrun``: process group, rank roles, DDP wrapping.

``torchrun --no-python --nproc-per-node N zsad train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; the same command without torchrun runs a single process and never touches
``torch.distributed``.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass
from typing import Collection, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import InvalidInputError
from ..methods.base import AnomalyDetector


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job. ``active``: a process group is in use;
    ``local_world_size``: the job's processes on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the files and shows progress."""
        return self.rank == 0


def context_from_environment(environ: Mapping[str, str] | None = None) -> DistributedContext:
    """Read torchrun's WORLD_SIZE / RANK / LOCAL_RANK (absent: a single process)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistributedContext()
    world_size = int(environ["WORLD_SIZE"])
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, active=True, local_world_size=local_world_size
    )


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """True outside torchrun and on rank 0 (for printing from the CLI)."""
    return context_from_environment(environ).is_main


def process_device(device: torch.device, context: DistributedContext) -> torch.device:
    """Under torchrun, CUDA processes each take the GPU of their LOCAL_RANK."""
    if context.active and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[tuple[DistributedContext, torch.device]]:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU) for the duration of
    the block, then leave it. Yields (context, this process's device). Outside torchrun
    it yields a single-process context and the device unchanged."""
    context = context_from_environment()
    if not context.active:
        yield context, device
        return
    device = process_device(device, context)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=context.rank,
            world_size=context.world_size,
        )
    try:
        yield context, device
    finally:
        if created:
            dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.active:
        dist.barrier()


def all_ranks_agree(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """True only when ``flag`` holds on every rank (the same answer everywhere)."""
    if not context.active:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def wrap_for_training(detector: AnomalyDetector, context: DistributedContext, device: torch.device) -> nn.Module:
    """The module the loop calls: the detector itself, or a DDP wrapper that syncs only the
    method's own parameters (the frozen backbone is neither broadcast nor all-reduced)."""
    if not context.active:
        return detector
    frozen = [f"backbone.{name}" for name, _ in detector.backbone.named_parameters()]
    frozen += [f"backbone.{name}" for name, _ in detector.backbone.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(detector, frozen)
    return DistributedDataParallel(detector, **ddp_options(device))


def ddp_options(device: torch.device, accepted: Collection[str] | None = None) -> dict[str, object]:
    """Keyword arguments for ``DistributedDataParallel`` that every supported torch
    (>= 2.1) accepts. ``accepted``: the keywords of the installed DDP (None = inspect it).

    Method buffers are fixed (e.g. FOFS projections), so nothing is re-broadcast before
    each forward: ``broadcast_buffers=False``, spelled ``forward_sync_buffers=False``
    where torch has it (2.13 on) and warns about the old name."""
    if accepted is None:
        accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    buffer_sync = "forward_sync_buffers" if "forward_sync_buffers" in accepted else "broadcast_buffers"
    return {
        "device_ids": [device.index] if device.type == "cuda" else None,
        buffer_sync: False,
        # Methods may leave some parameters out of a step (e.g. an ablated branch).
        "find_unused_parameters": True,
    }
