"""Parse-time checks of option values: a value that makes no sense is refused before
anything is loaded, with the option named (typer reports it, exit status 2)."""
from __future__ import annotations

import math
import re
from typing import Callable, Optional

import typer

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_name(value: str) -> str:
    """auto, cpu, mps, cuda or cuda:N; anything else (tpu, gpu0...) is refused."""
    if not _DEVICE.match(value):
        raise typer.BadParameter(f"{value!r} is not a device zsad can use; pass auto, cpu, cuda, cuda:N or mps")
    return value


def positive_number(value: Optional[float]) -> Optional[float]:
    """A finite number above zero (None = not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} must be a finite number above 0")
    return value


def one_of(*choices: str) -> Callable[[Optional[str]], Optional[str]]:
    """A callback accepting only ``choices`` (None = not given)."""

    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def seed_list(value: Optional[str]) -> Optional[list[int]]:
    """``--seeds 0,1,2`` -> [0, 1, 2] (None = not given); distinct non-negative integers."""
    if value is None:
        return None
    from ..errors import InvalidInputError

    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise InvalidInputError(f"--seeds {value!r}: give comma-separated non-negative integers, e.g. --seeds 0,1,2")
    seeds = [int(part) for part in parts]
    if len(set(seeds)) != len(seeds):
        raise InvalidInputError(f"--seeds {value!r} repeats a seed: each seed would train the same model twice")
    return seeds
