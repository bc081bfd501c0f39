"""Model checkpoints: the method's own tensors (safetensors) plus the full config (JSON).

A checkpoint file is self-contained: its safetensors metadata carries the full config
(method, method config, backbone config), so the file alone rebuilds its model. A
training output directory holds ``config.json``, ``checkpoints/epoch_NNN.safetensors``
(+ ``.train_state.pt`` with optimiser, scheduler and RNG state) and, once training has
finished, ``model.safetensors``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .fileio import atomic_save

CONFIG_METADATA_KEY = "zsad_config"
FINAL_CHECKPOINT_NAME = "model.safetensors"
CHECKPOINT_DIR_NAME = "checkpoints"
_EPOCH_PATTERN = re.compile(r"epoch_(\d+)\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


def epoch_checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / CHECKPOINT_DIR_NAME / f"epoch_{epoch:03d}.safetensors"


def train_state_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".train_state.pt")


def epoch_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every per-epoch checkpoint in a run directory, oldest first."""
    found = []
    for path in (run_dir / CHECKPOINT_DIR_NAME).glob("epoch_*.safetensors"):
        match = _EPOCH_PATTERN.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training directory meaning its final checkpoint (or, for
    an unfinished run, its latest epoch checkpoint)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        final = path / FINAL_CHECKPOINT_NAME
        if final.is_file():
            return final
        epochs = epoch_checkpoints(path)
        if epochs:
            return epochs[-1][1]
        raise CheckpointError(f"{path} holds no {FINAL_CHECKPOINT_NAME} and no {CHECKPOINT_DIR_NAME}/epoch_*.safetensors")
    raise CheckpointError(f"checkpoint not found: {path}")


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write tensors + config atomically (temporary file, then rename)."""
    payload = {key: value.detach().contiguous().cpu().clone() for key, value in tensors.items()}
    metadata = {CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda temporary: save_file(payload, str(temporary), metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (tensors on the CPU, full config)."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if CONFIG_METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a zsad checkpoint (no config inside)")
    return tensors, json.loads(metadata[CONFIG_METADATA_KEY])


def config_differences(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Human-readable list of the fields where two nested config dicts differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        differences = []
        for key in sorted(set(expected) | set(actual)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in expected:
                differences.append(f"{name}: only in the checkpoint ({actual[key]!r})")
            elif key not in actual:
                differences.append(f"{name}: missing from the checkpoint (requested {expected[key]!r})")
            else:
                differences.extend(config_differences(expected[key], actual[key], name))
        return differences
    return [] if expected == actual else [f"{prefix}: requested {expected!r}, checkpoint has {actual!r}"]


def load_method_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a method's own tensors (everything but the frozen backbone), strictly."""
    own = {key: value for key, value in module.state_dict().items() if not key.startswith("backbone.")}
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:3]}"
        )
    module.load_state_dict(tensors, strict=False)
