"""The reproducibility manifest of a run: what produced its numbers.

Written as ``reproducibility.json`` into every training run folder and into
``benchmark.json``: the zsad version and git commit, torch / CUDA / cuDNN versions, the
device, the determinism switches, the seed, the checkpoint rule, and each data set with
its image count and a content hash of its file list (two copies of a data set that hash
alike hold the same files with the same labels).
"""
from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..data.sample import Sample

MANIFEST_NAME = "reproducibility.json"
# The model a run folder keeps: nothing is selected on test data.
CHECKPOINT_RULE = "last epoch"


def file_list_hash(samples: Iterable[Sample], root: Path) -> str:
    """SHA-256 of the sorted lines ``image<TAB>mask<TAB>label<TAB>class`` (paths relative
    to ``root``): equal for two copies of a data set in different folders, different when a
    file, a label or a mask is added, removed or renamed. File contents are not read."""

    def relative(path: Path | None) -> str:
        if path is None:
            return "-"
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            return Path(path).as_posix()

    lines = sorted(
        f"{relative(s.image_path)}\t{relative(s.mask_path)}\t{s.label}\t{s.class_name}" for s in samples
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def dataset_entry(spec: str, samples: list[Sample], root: Path, split: str) -> dict[str, Any]:
    """One data set of the manifest: its spec, split, image count and file-list hash."""
    return {"spec": spec, "split": split, "images": len(samples), "file_list_sha256": file_list_hash(samples, root)}


def _git_commit() -> str | None:
    """The commit of the source tree zsad runs from, when it is a git checkout."""
    source = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _version() -> str | None:
    try:
        return metadata.version("zsad")
    except metadata.PackageNotFoundError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return device.type


def reproducibility_manifest(seed: int | list[int], device: torch.device, datasets: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest (see the module docstring); ``datasets`` from :func:`dataset_entry`."""
    cudnn = torch.backends.cudnn
    return {
        "zsad_version": _version(),
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "device": _device_name(device),
        "deterministic": {
            "torch.use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn.deterministic": bool(cudnn.deterministic),
            "cudnn.benchmark": bool(cudnn.benchmark),
        },
        "seed": seed,
        "checkpoint_rule": CHECKPOINT_RULE,
        "datasets": datasets,
    }
