"""Checkpoints from the Hugging Face Hub: ``hf-hub:ORG/NAME[@REVISION]``.

A published run folder (``model.safetensors`` + ``config.json``) is fetched into the
Hub's own cache by ``huggingface_hub`` and then read like a local run folder. The usual
Hub settings apply: ``HF_HUB_CACHE`` (where the cache lives), ``HF_HUB_OFFLINE=1`` (use
the cache only, never the network), ``HF_TOKEN`` (private repositories). A revision (a
branch, a tag or a commit hash) pins the exact files.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ZsadError

HUB_PREFIX = "hf-hub:"
# What a run folder publishes; per-epoch checkpoints are fetched only if the final one is absent.
RUN_FOLDER_FILES = ["model.safetensors", "config.json", "checkpoints/*.safetensors"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "on", "yes", "true"}


class HubReferenceError(ZsadError, ValueError):
    """A hub reference that is malformed or cannot be resolved."""


def is_hub_reference(value: str | os.PathLike) -> bool:
    return str(value).startswith(HUB_PREFIX)


def parse_hub_reference(value: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REV]`` -> (``ORG/NAME``, REV or None)."""
    body = str(value)[len(HUB_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.match(repo_id) or (revision == "" and "@" in body):
        raise HubReferenceError(f"{value!r} is not hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo_id, revision or None


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_run_folder(value: str) -> Path:
    """Fetch (or find in the cache) the run folder a hub reference names; returns the
    local snapshot folder. Raises HubReferenceError with what to do when it cannot."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError as error:  # pragma: no cover - huggingface_hub comes with open_clip
        raise HubReferenceError("hf-hub: checkpoints need the huggingface_hub package (pip install huggingface_hub)") from error
    repo_id, revision = parse_hub_reference(value)
    offline = _offline()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            allow_patterns=RUN_FOLDER_FILES,
            local_files_only=offline,
        )
    except RevisionNotFoundError as error:
        raise HubReferenceError(f"{value}: revision {revision!r} does not exist in {repo_id}") from error
    except RepositoryNotFoundError as error:
        raise HubReferenceError(f"{value}: no repository {repo_id} (or it is private: set HF_TOKEN)") from error
    except LocalEntryNotFoundError as error:
        where = "HF_HUB_OFFLINE is set and the Hub cache" if offline else "the Hub cannot be reached and its cache"
        raise HubReferenceError(
            f"{value}: {where} ({os.environ.get('HF_HUB_CACHE') or 'the default cache'}) holds no copy of "
            f"{repo_id}{'@' + revision if revision else ''}. Download it once with network access, or give a local run folder."
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise HubReferenceError(f"{value}: could not fetch from the Hub ({error})") from error
    return Path(folder)
