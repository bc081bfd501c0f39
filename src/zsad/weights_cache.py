"""Is a hub download possible, and is it needed? Answered before any download starts.

Without network access OpenCLIP's download retries for about a minute before it
fails. :func:`cached_weight_file` finds weights already in the cache (then no
network is needed at all) and :func:`offline_reason` says at once why a download
cannot work: ``HF_HUB_OFFLINE`` is set, or the hub's host cannot be reached.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import open_clip

__all__ = ["cached_weight_file", "offline_reason"]

_DEFAULT_HUB = "https://huggingface.co"
_PROBE_SECONDS = 3.0
_TRUE = {"1", "true", "yes", "on"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def cached_weight_file(model_name: str, tag: str, cache_dir: str | None) -> Path | None:
    """The local file of OpenCLIP's ``tag`` weights for ``model_name`` if a download left one."""
    config = open_clip.get_pretrained_cfg(model_name, tag)
    hub = config.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        for candidate in ("open_clip_model.safetensors", filename):
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = config.get("url", "")
    if url:
        folder = Path(cache_dir) if cache_dir else Path("~/.cache/clip").expanduser()
        candidate = folder / os.path.basename(urlparse(url).path)
        if candidate.is_file():
            return candidate
    return None


def offline_reason() -> str | None:
    """Why a hub download cannot work right now, or None when it may.

    Behind a proxy the hub is not probed directly (the proxy decides).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or _DEFAULT_HUB)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=_PROBE_SECONDS).close()
    except OSError as error:
        return f"{host} cannot be reached ({error.strerror or error})"
    return None
