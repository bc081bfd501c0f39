"""`--checkpoint hf-hub:ORG/NAME[@REV]`, resolved offline against a Hub cache laid out
the way huggingface_hub writes it (models--ORG--NAME/{refs,snapshots,blobs})."""
from __future__ import annotations

import hashlib
import json
import os
import warnings

import pytest
import torch
from typer.testing import CliRunner

from zsad.api import build_detector, full_config, load
from zsad.checkpoints import CheckpointError, save_checkpoint
from zsad.cli import app
from zsad.hub import HubReferenceError, parse_hub_reference

REPO = "acme/moeclip-tiny"
OLD_COMMIT, NEW_COMMIT = "1" * 40, "2" * 40


def _moeclip(seed: int):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64, for_training=True)


def _publish(cache, commit: str, run_files: dict[str, bytes], refs: list[str]) -> None:
    """Store files as huggingface_hub does: content-addressed blobs, a snapshot of
    relative symlinks per commit, and refs naming the commit."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    for name, data in run_files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Two published versions: tag v1 = OLD_COMMIT, main = NEW_COMMIT. Returns their models."""
    cache = tmp_path / "hub"
    models = {}
    for commit, seed, refs in ((OLD_COMMIT, 1, ["v1"]), (NEW_COMMIT, 2, ["main"])):
        model = _moeclip(seed)
        with torch.no_grad():
            for parameter in model.projections.parameters():
                parameter.normal_(generator=torch.Generator().manual_seed(seed))
        staging = tmp_path / f"run-{seed}"
        save_checkpoint(staging / "model.safetensors", model.trainable_state_dict(), full_config(model))
        (staging / "config.json").write_text(json.dumps(full_config(model)))
        _publish(cache, commit, {n: (staging / n).read_bytes() for n in ("model.safetensors", "config.json")}, refs)
        models[commit] = model
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return models


def _same_state(a, b) -> bool:
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_parse_hub_reference():
    assert parse_hub_reference("hf-hub:acme/run") == ("acme/run", None)
    assert parse_hub_reference("hf-hub:acme/run.v2@v1.0") == ("acme/run.v2", "v1.0")
    for bad in ("hf-hub:acme", "hf-hub:/run", "hf-hub:acme/run@", "hf-hub:a/b/c"):
        with pytest.raises(HubReferenceError, match="ORG/NAME"):
            parse_hub_reference(bad)


def test_hub_checkpoint_loads_like_a_run_folder_and_revisions_pin_versions(hub_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latest = load(checkpoint=f"hf-hub:{REPO}").detector
        tagged = load(checkpoint=f"hf-hub:{REPO}@v1").detector
        by_commit = load(checkpoint=f"hf-hub:{REPO}@{OLD_COMMIT}").detector
    assert _same_state(latest, hub_cache[NEW_COMMIT])
    assert _same_state(tagged, hub_cache[OLD_COMMIT]) and _same_state(by_commit, hub_cache[OLD_COMMIT])
    assert not _same_state(latest, tagged)


def test_build_detector_itself_resolves_hub_names_and_run_folders(hub_cache, tmp_path):
    """Issue 18 §3: checkpoints are resolved where they are read, below the engine."""
    detector = build_detector(checkpoint=f"hf-hub:{REPO}@v1")
    assert _same_state(detector, hub_cache[OLD_COMMIT])
    run = tmp_path / "run"
    save_checkpoint(run / "model.safetensors", hub_cache[NEW_COMMIT].trainable_state_dict(), full_config(hub_cache[NEW_COMMIT]))
    assert _same_state(build_detector(checkpoint=run), hub_cache[NEW_COMMIT])
    assert _same_state(build_detector(checkpoint=str(run)), hub_cache[NEW_COMMIT])


def test_hub_checkpoint_gets_the_same_config_checks(hub_cache):
    with pytest.raises(CheckpointError, match="method: requested 'zeroshot', the checkpoint has 'moeclip'"):
        load("zeroshot", checkpoint=f"hf-hub:{REPO}")
    with pytest.raises(CheckpointError, match="image_size: requested 128"):
        load(checkpoint=f"hf-hub:{REPO}", image_size=128)


def test_offline_without_a_cached_copy_says_what_to_do(hub_cache):
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set .* holds no copy of acme/other"):
        load(checkpoint="hf-hub:acme/other")
    with pytest.raises(CheckpointError, match="holds no copy of acme/moeclip-tiny@v9"):
        load(checkpoint=f"hf-hub:{REPO}@v9")


def test_cli_predicts_with_a_hub_checkpoint(hub_cache, tmp_path):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (120, 30, 200)).save(image)
    result = CliRunner().invoke(
        app, ["predict", str(image), "--checkpoint", f"hf-hub:{REPO}@v1", "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "o" / "scores.json").read_text())["meta"]
    assert meta["method"] == "moeclip" and meta["backbone"] == "zsad-tiny"
    bad = CliRunner().invoke(app, ["predict", str(image), "--checkpoint", "hf-hub:nope", "--out", str(tmp_path / "p")])
    assert bad.exit_code == 1 and "ORG/NAME" in bad.output
