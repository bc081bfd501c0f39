"""Model checkpoint files: the method's own tensors (safetensors) plus the full config (JSON).

A checkpoint file is self-contained: its safetensors metadata carries the full config
(method, method config, backbone config), so the file alone rebuilds its model.

A checkpoint is named where it is read (:func:`resolve_checkpoint`): a file, a training
run's folder (its final model, or the newest epoch of an unfinished run), or a run folder
published on the Hugging Face Hub (``hf-hub:ORG/NAME[@REV]``, see :mod:`zsad.hub`). How
a run writes its folder is the engine's business (``engine/run_folder.py``); the names
it reads back are defined here, once.

A method's own state is every tensor of its ``state_dict`` outside the frozen backbone
(:func:`own_state`); that is what a checkpoint stores and what a scoring identity hashes.
Configs are compared by one comparator (:func:`config_differences`), whose differences
are shown one per line (:func:`describe_differences`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import ZsadError
from .fileio import atomic_save
from .hub import HubReferenceError, hub_run_folder, is_hub_reference

CONFIG_METADATA_KEY = "zsad_config"
FINAL_CHECKPOINT_NAME = "model.safetensors"
CHECKPOINT_DIR_NAME = "checkpoints"
BACKBONE_PREFIX = "backbone."  # state_dict keys of the frozen backbone: never in a checkpoint
MAX_DIFFERENCES_SHOWN = 12
_EPOCH_PATTERN = re.compile(r"epoch_(\d+)\.safetensors$")


class CheckpointError(ZsadError, ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write tensors + config atomically (temporary file, then rename)."""
    payload = {key: value.detach().contiguous().cpu().clone() for key, value in tensors.items()}
    metadata = {CONFIG_METADATA_KEY: json.dumps(config, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, lambda temporary: save_file(payload, str(temporary), metadata=metadata))


def epoch_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every per-epoch checkpoint in a run directory, oldest first."""
    found = []
    for path in (Path(run_dir) / CHECKPOINT_DIR_NAME).glob("epoch_*.safetensors"):
        match = _EPOCH_PATTERN.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` names: a file as it is; a training run's folder
    means its final checkpoint (or, for an unfinished run, its newest epoch checkpoint);
    ``hf-hub:ORG/NAME[@REV]`` a run folder published on the Hugging Face Hub.

    Raises:
        CheckpointError: nothing usable there (or the Hub reference cannot be resolved).
    """
    if is_hub_reference(path):
        try:
            path = hub_run_folder(str(path))
        except HubReferenceError as error:
            raise CheckpointError(str(error)) from error
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


def own_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The method's own tensors of a full ``state_dict``: everything outside the frozen
    backbone (trainable parameters and persistent buffers). The one place of that rule."""
    return {key: value for key, value in state.items() if not key.startswith(BACKBONE_PREFIX)}


def state_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of tensors by content: names, dtypes, shapes and values, in name order (the
    same model gives the same digest wherever its file lies or however it was loaded)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().contiguous().cpu()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (tensors on the CPU, full config) of one checkpoint file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if CONFIG_METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a zsad checkpoint (no config inside)")
    try:
        config = json.loads(metadata[CONFIG_METADATA_KEY])
    except ValueError as error:
        raise CheckpointError(
            f"{path}: the config stored inside the checkpoint is not valid JSON ({error}); the file is damaged or "
            "was not written by zsad. Use another checkpoint (e.g. an earlier checkpoints/epoch_NNN.safetensors)."
        ) from error
    if not isinstance(config, dict) or not {"method", "method_config", "backbone"} <= set(config):
        raise CheckpointError(f"{path}: the config stored inside the checkpoint lacks method, method_config or backbone; it was not "
                              "written by zsad")
    return tensors, config


def config_differences(
    requested: Any,
    stored: Any,
    ignored: Iterable[str] = (),
    only_given: bool = False,
    prefix: str = "",
    stored_name: str = "the checkpoint",
) -> list[str]:
    """Human-readable list of the fields where a requested config and a stored one (a
    checkpoint's, an ONNX file's, an earlier run's) differ. Nested dicts compare field by
    field under dotted names; ``ignored`` names fields (dotted) that may differ; with
    ``only_given`` a field the request leaves out or sets to None is not compared;
    ``stored_name`` says where the stored config comes from."""
    ignored = frozenset(ignored)
    if isinstance(requested, dict) and isinstance(stored, dict):
        differences = []
        for key in sorted(set(requested) | set(stored), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if name in ignored:
                continue
            if key not in requested or (only_given and requested[key] is None):
                if not only_given:
                    differences.append(f"{name}: only in {stored_name} ({stored[key]!r})")
            elif key not in stored:
                differences.append(f"{name}: missing from {stored_name} (requested {requested[key]!r})")
            else:
                differences.extend(config_differences(requested[key], stored[key], ignored, only_given, name, stored_name))
        return differences
    return [] if requested == stored else [f"{prefix}: requested {requested!r}, {stored_name} has {stored!r}"]


def describe_differences(headline: str, differences: list[str], limit: int = MAX_DIFFERENCES_SHOWN) -> str:
    """``headline`` with a count, then one difference per line (at most ``limit``, then
    how many more): readable even when a whole method config differs."""
    shown = [f"  - {difference}" for difference in differences[:limit]]
    if len(differences) > limit:
        shown.append(f"  ... and {len(differences) - limit} more")
    count = f"{len(differences)} difference{'s' if len(differences) != 1 else ''}"
    return "\n".join([f"{headline} ({count}):", *shown])


def check_config_fits(
    requested: dict[str, Any],
    stored: dict[str, Any],
    source: str,
    ignored: Iterable[str] = (),
    only_given: bool = False,
    stored_name: str = "the checkpoint",
) -> None:
    """The one test of "does this config fit this stored one", for loading, resuming and
    ONNX files: raise CheckpointError naming every difference (see ``config_differences``)."""
    differences = config_differences(requested, stored, ignored, only_given, stored_name=stored_name)
    if differences:
        raise CheckpointError(describe_differences(f"{source} was made with another config", differences))


def load_method_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a method's own tensors (everything but the frozen backbone), strictly."""
    own = own_state(module.state_dict())
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:3]}"
        )
    module.load_state_dict(tensors, strict=False)
