"""Where the CLIP weights come from: an OpenCLIP hub tag, a local file (OpenAI JIT archive
or OpenCLIP state dict), or ``random[:SEED]``; the bundled test model configs."""
from __future__ import annotations

import contextlib
import logging
import warnings
import zipfile
from importlib import resources
from pathlib import Path

import open_clip
import torch
from torch import nn

from .errors import RandomWeightsWarning, ZsadError
from .weights_cache import cached_weight_file, offline_reason

TINY_MODEL_NAME = "zsad-tiny"
RANDOM_WEIGHTS = "random"
DEFAULT_RANDOM_SEED = 0


class WeightsUnavailableError(ZsadError, RuntimeError):
    """The requested CLIP weights could not be obtained or do not fit the model."""


def register_bundled_model_configs() -> None:
    """Make zsad's own OpenCLIP configs (``zsad-tiny``) known to ``open_clip``.

    Idempotent: OpenCLIP keeps a process-wide registry, which is only extended once.
    """
    if TINY_MODEL_NAME in open_clip.list_models():
        return
    config_dir = resources.files("zsad") / "resources" / "model_configs"
    open_clip.add_model_config(Path(str(config_dir)))


def random_weights_seed(weights: str) -> int | None:
    """The seed of a ``random`` / ``random:SEED`` weights string, None for any other.

    ``random`` (without a seed, as older checkpoints store it) means seed 0.
    """
    text = weights.strip().lower()
    if text == RANDOM_WEIGHTS:
        return DEFAULT_RANDOM_SEED
    prefix = RANDOM_WEIGHTS + ":"
    if not text.startswith(prefix):
        return None
    seed = text[len(prefix) :].strip()
    if not seed.isdigit():
        raise WeightsUnavailableError(f"'{weights}': the seed of random weights must be a non-negative integer (random:SEED)")
    return int(seed)


def is_random_weights(weights: str) -> bool:
    """The one test of "are these random weights" for a weights option or description."""
    return random_weights_seed(weights) is not None


def canonical_weights(weights: str) -> str:
    """``random`` -> ``random:0``, ``random:7`` -> ``random:7``; anything else unchanged."""
    seed = random_weights_seed(weights)
    return weights if seed is None else f"{RANDOM_WEIGHTS}:{seed}"


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


WEIGHT_FILE_KINDS = "an OpenAI JIT archive, a PyTorch state dict .pt/.bin/.pth of plain tensors, or a .safetensors file"


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from an OpenAI JIT archive, a .pt/.bin/.pth state dict or
    a .safetensors file. Returns CPU tensors keyed as OpenCLIP's ``CLIP`` expects."""
    if not path.is_file():
        raise WeightsUnavailableError(f"weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path), device="cpu")
        elif _is_torchscript_archive(path):
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in ("input_resolution", "context_length", "vocab_size"):
                state_dict.pop(key, None)
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    except WeightsUnavailableError:
        raise
    except Exception as error:  # corrupt archive, pickle refused, truncated file...
        # The loaders' own messages say little (a bare byte value, a page on weights_only):
        # say what the file should be; the cause stays chained for a traceback.
        raise WeightsUnavailableError(
            f"cannot read CLIP weights from {path}: it is not a weight file zsad reads ({WEIGHT_FILE_KINDS}), "
            f"or it is damaged or truncated ({type(error).__name__}). Check the file, or pass --weights openai."
        ) from error
    if not isinstance(state_dict, dict) or not state_dict:
        raise WeightsUnavailableError(f"{path} does not contain a state dict")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    if "logit_scale" in state_dict and state_dict["logit_scale"].ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is None:
        state_dict.pop("logit_bias", None)
    # Resize a positional embedding saved at another grid to the model's native grid first.
    open_clip.factory.resize_pos_embed(state_dict, model)
    expected = model.state_dict()
    # Derived buffers (e.g. the causal attn_mask) may be saved by TorchScript archives.
    for name, _ in model.named_buffers():
        if name not in expected:
            state_dict.pop(name, None)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        f"{key}: file {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if state_dict[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
                f"shape mismatch {wrong_shape[:3]}" if wrong_shape else "",
            )
            if part
        )
        raise WeightsUnavailableError(
            f"the weights in {source} do not fit the OpenCLIP model '{model_name}' ({details}). "
            "Pass the --backbone that matches the file."
        )
    model.load_state_dict(state_dict, strict=True)


@contextlib.contextmanager
def _openclip_log_quiet():
    """Silence OpenCLIP's root-logger warnings while it builds a model we fill ourselves."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def build_random_clip(model_name: str, seed: int, quick_gelu: bool) -> nn.Module:
    """An OpenCLIP model with random weights that depend only on (model config, seed).

    OpenCLIP initialises from torch's global CPU generator; the model is built on the CPU
    inside a forked RNG scope seeded with ``seed``, so neither the caller's RNG state nor
    what was built before changes the weights, and the caller's RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]), _openclip_log_quiet():
        torch.manual_seed(seed)
        return open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")


def build_clip(name: str, weights: str, cache_dir: str | None, requested_quick_gelu: bool | None) -> tuple[nn.Module, str]:
    """Create the OpenCLIP model ``name`` with its ``weights`` (see BackboneConfig).
    Returns (model, weights description)."""
    register_bundled_model_configs()
    if name not in open_clip.list_models():
        raise WeightsUnavailableError(
            f"unknown OpenCLIP model '{name}'. Known models include: "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT'))[:400]}..., {TINY_MODEL_NAME}"
        )
    weight_path = Path(weights).expanduser()
    seed = random_weights_seed(weights)
    if seed is not None:
        warnings.warn(
            f"RANDOM WEIGHTS: the CLIP backbone '{name}' is randomly initialised (seed {seed}). Every score and map "
            "is meaningless except as a pipeline check.",
            RandomWeightsWarning,
            stacklevel=3,
        )
        quick_gelu = True if requested_quick_gelu is None else requested_quick_gelu
        return build_random_clip(name, seed, quick_gelu), canonical_weights(weights)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if weight_path.exists() or (weights not in tags and (weight_path.suffix or "/" in weights)):
        quick_gelu = True if requested_quick_gelu is None else requested_quick_gelu
        with _openclip_log_quiet():  # "no pretrained weights": we load them right after
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
        _load_state_dict_into(model, read_weight_file(weight_path), str(weight_path), name)
        return model, str(weight_path)
    if weights not in tags:
        raise WeightsUnavailableError(
            f"'{weights}' is neither a weight file nor a known OpenCLIP tag for '{name}' "
            f"(known tags: {', '.join(tags) or 'none'}). Pass --weights PATH, a tag, or 'random[:SEED]'."
        )
    tag_config = open_clip.get_pretrained_cfg(name, weights)
    quick_gelu = bool(tag_config.get("quick_gelu", False)) if requested_quick_gelu is None else requested_quick_gelu
    cached = cached_weight_file(name, weights, cache_dir)
    if cached is not None:  # no network needed
        with _openclip_log_quiet():
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
        _load_state_dict_into(model, read_weight_file(cached), str(cached), name)
        return model, weights
    reason = offline_reason()
    if reason is not None:
        raise WeightsUnavailableError(
            f"the '{weights}' weights of {name} are not in the cache and cannot be downloaded: {reason}. "
            "Download them on a machine with network access (e.g. OpenAI's ViT-L-14-336px.pt) and pass "
            "--weights PATH, or --cache-dir a folder holding OpenCLIP's cache. To try zsad without any "
            "weights, run the dry run with `--backbone zsad-tiny --weights random` (random weights: a "
            "pipeline check, its scores mean nothing)."
        )
    try:
        model = open_clip.create_model(
            name, pretrained=weights, cache_dir=cache_dir, force_quick_gelu=quick_gelu
        )
    except Exception as error:
        raise WeightsUnavailableError(
            f"could not download the '{weights}' weights of {name} ({error}). This machine may have no "
            "network access. Download the file elsewhere (e.g. the OpenAI archive ViT-L-14-336px.pt or "
            "OpenCLIP's open_clip_pytorch_model.bin) and pass it with --weights PATH, or set --cache-dir "
            "to a folder that already holds OpenCLIP's cache."
        ) from error
    return model, weights
