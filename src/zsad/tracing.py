"""Whether ``torch.compile`` is tracing the code that asks, on every supported torch."""
from __future__ import annotations

import torch

# torch.compiler.is_compiling from torch 2.3 on; torch._dynamo's own before (same meaning).
_is_compiling = getattr(torch.compiler, "is_compiling", None)
if _is_compiling is None:
    import torch._dynamo

    _is_compiling = torch._dynamo.is_compiling


def is_compiling() -> bool:
    """True while torch.compile traces the caller (code that then chooses the static-shape
    path), False when it runs eagerly."""
    return _is_compiling()
