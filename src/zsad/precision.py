"""Full precision inside an autocast region, for the few operations that need it.

Under bf16 autocast, matmuls and convolutions run in bf16 (about 3 significant digits).
Cosines, logits, softmax, Gram matrices and norms are computed in float32 instead: they
are cheap, and their errors are amplified downstream (a logit is 100 x a cosine).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Switch autocast off for ``device``'s type inside the block (a no-op without autocast).

    Inputs must still be cast with ``.float()`` by the caller."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield
