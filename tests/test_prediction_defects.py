"""Issue 18 §7, prediction and service: nothing mixed. A resumed run refuses another
scoring identity, a file named twice is scored once, link cycles are skipped entries,
--out equal to the input folder never scores its own results, and the smaller messages
(junk weights, the service's 400s, many differences, clinicdb's nested download)."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zsad.api import build_detector, full_config, load
from zsad.checkpoints import config_differences, describe_differences, save_checkpoint
from zsad.cli import app
from zsad.discovery import find_images
from zsad.engine.fewshot import with_reference_folder
from zsad.engine.prediction import predict_files
from zsad.score_table import ResumeMismatchError

runner = CliRunner()
TINY_OPTIONS = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]
TINY = {"backbone": "zsad-tiny", "weights": "random", "image_size": 64, "device": "cpu"}


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.new("RGB", (40, 30), (40 * index % 255, 80, 160)).save(path)
        paths.append(path)
    return paths


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _interrupted_run(predictor, paths: list[Path], out: Path) -> None:
    """A run that scored the first image only (as after Ctrl-C or kill -9)."""
    predict_files(predictor, paths[:1], out, 0.5, show_progress=False, meta=predictor.provenance())


# ---------------------------------------------------------------- resume identity


@pytest.fixture(scope="module")
def zeroshot():
    return load("zeroshot", **TINY)


def test_scores_json_records_the_whole_identity_from_the_start(tmp_path, zeroshot):
    paths = _images(tmp_path / "in", 2)
    _interrupted_run(zeroshot, paths, tmp_path / "out")
    identity = json.loads((tmp_path / "out" / "scores.json").read_text())["meta"]["identity"]
    assert identity["class_words"] == "object" and identity["method"] == "zeroshot"
    assert len(identity["own_state_sha256"]) == 64 and identity["method_config"] == zeroshot.detector.config.to_dict()
    assert "calibration" in identity and identity["calibration"] is None  # the field a calibration file fills
    assert identity["references"] is None


def test_resume_refuses_other_words_references_or_fusion_weight_and_names_them(tmp_path, zeroshot):
    paths = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    _interrupted_run(zeroshot, paths, out)
    with pytest.raises(ResumeMismatchError, match="class_words: requested 'screw', the earlier run has 'object'"):
        predict_files(zeroshot, paths, out, 0.5, class_name="screw", resume=True, show_progress=False, meta=zeroshot.provenance())
    references = _images(tmp_path / "refs", 1)[0].parent
    with pytest.raises(ResumeMismatchError, match="references: requested"):
        few = with_reference_folder(zeroshot, references, 0.5)
        predict_files(few, paths, out, 0.5, resume=True, show_progress=False, meta=few.provenance())
    assert len(_rows(out)) == 1  # nothing was added
    summary = predict_files(zeroshot, paths, out, 0.5, resume=True, show_progress=False, meta=zeroshot.provenance())
    assert summary.n_previous == 1 and len(_rows(out)) == 3

    few_out = tmp_path / "few"
    few = with_reference_folder(zeroshot, references, 0.5)
    _interrupted_run(few, paths, few_out)
    other_weight = with_reference_folder(zeroshot, references, 0.75)
    with pytest.raises(ResumeMismatchError, match="identity.references.fusion_weight: requested 0.75, the earlier run has 0.5"):
        predict_files(other_weight, paths, few_out, 0.5, resume=True, show_progress=False, meta=few.provenance())


def test_resume_refuses_another_calibration(tmp_path, zeroshot):
    from zsad.calibration import ClassCalibration

    paths = _images(tmp_path / "in", 2)
    entry = ClassCalibration("object", 0.1, 0.4, 0.6, [0.1, 0.2, 0.3], 0.25)
    out = tmp_path / "out"
    predict_files(zeroshot, paths[:1], out, 0.5, show_progress=False, meta=zeroshot.provenance(), calibration=entry)
    recorded = json.loads((out / "scores.json").read_text())["meta"]["identity"]["calibration"]
    assert recorded["image_threshold"] == 0.4 and len(recorded["sha256"]) == 64
    other = ClassCalibration("object", 0.1, 0.4, 0.6, [0.1, 0.2, 0.35], 0.25)  # same thresholds, other normal scores
    with pytest.raises(ResumeMismatchError, match="identity.calibration.sha256: requested"):
        predict_files(zeroshot, paths, out, 0.5, resume=True, show_progress=False, meta=zeroshot.provenance(), calibration=other)
    with pytest.raises(ResumeMismatchError, match="p_value"):  # without it: another kind of table
        predict_files(zeroshot, paths, out, 0.4, resume=True, show_progress=False, meta=zeroshot.provenance())


def test_resume_refuses_another_checkpoint_of_the_same_method(tmp_path):
    paths = _images(tmp_path / "in", 2)
    checkpoints = []
    for seed in (1, 2):
        with pytest.warns(UserWarning, match="untrained"):
            detector = build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64, seed=seed)
        path = tmp_path / f"run{seed}" / "model.safetensors"
        save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
        checkpoints.append(path.parent)  # run folders: resolved where they are read
    out = tmp_path / "out"
    first = runner.invoke(
        app, ["predict", str(paths[0]), "--out", str(out), "--checkpoint", str(checkpoints[0]), "--device", "cpu", "--quiet"]
    )
    assert first.exit_code == 0, first.output
    mixed = runner.invoke(
        app, ["predict", *map(str, paths), "--out", str(out), "--checkpoint", str(checkpoints[1]), "--resume", "--device", "cpu", "--quiet"]
    )
    assert mixed.exit_code == 1 and "identity.own_state_sha256: requested" in mixed.output, mixed.output
    assert len(_rows(out)) == 1
    same = runner.invoke(
        app, ["predict", *map(str, paths), "--out", str(out), "--checkpoint", str(checkpoints[0]), "--resume", "--device", "cpu", "--quiet"]
    )
    assert same.exit_code == 0 and len(_rows(out)) == 2, same.output


@pytest.mark.parametrize("option, difference", [
    (["--activation", "gelu"], "identity.backbone_config.quick_gelu"),
    (["--domain", "medical"], "identity.domain: requested 'medical'"),
])
def test_resume_refuses_another_activation_or_domain(tmp_path, option, difference):
    # Both change the scores (GELU vs QuickGELU in every block; MoECLIP smooths and scores per domain).
    paths = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = ["predict", str(paths[0]), "--out", str(out), "--method", "moeclip", "--allow-untrained", *TINY_OPTIONS]
    assert runner.invoke(app, first).exit_code == 0
    again = runner.invoke(
        app,
        ["predict", *map(str, paths), "--out", str(out), "--method", "moeclip", "--allow-untrained", "--resume", *option, *TINY_OPTIONS],
    )
    assert again.exit_code == 1 and difference in again.output, again.output
    assert len(_rows(out)) == 1


def test_resume_with_another_method_lists_the_differences_one_per_line(tmp_path):
    paths = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert runner.invoke(app, ["predict", str(paths[0]), "--out", str(out), *TINY_OPTIONS]).exit_code == 0
    other = runner.invoke(
        app, ["predict", *map(str, paths), "--out", str(out), "--method", "moeclip", "--allow-untrained", "--resume", *TINY_OPTIONS]
    )
    assert other.exit_code == 1
    lines = [line for line in other.output.splitlines() if line.strip().startswith("- ")]
    assert any("identity.method: requested 'moeclip', the earlier run has 'zeroshot'" in line for line in lines), other.output
    assert 1 < len(lines) <= 12 and all(len(line) < 200 for line in lines)


def test_describe_differences_caps_the_list_and_counts():
    requested = {f"field_{index:02d}": index for index in range(40)}
    differences = config_differences(requested, {key: -1 for key in requested}, stored_name="the earlier run")
    text = describe_differences("cannot resume", differences, limit=5)
    lines = text.splitlines()
    assert lines[0] == "cannot resume (40 differences):" and len(lines) == 7
    assert lines[1] == "  - field_00: requested 0, the earlier run has -1" and lines[-1] == "  ... and 35 more"
    assert describe_differences("x", ["a"]).splitlines()[0] == "x (1 difference):"


# ---------------------------------------------------------------- each file once


def test_a_file_named_twice_is_scored_once(tmp_path):
    paths = _images(tmp_path / "ov", 2)
    named = [str(tmp_path / "ov"), str(paths[0]), str(tmp_path / "ov" / "." / paths[0].name)]
    fresh = runner.invoke(app, ["predict", *named, "--out", str(tmp_path / "out"), *TINY_OPTIONS])
    assert fresh.exit_code == 0, fresh.output
    assert sorted(Path(row["path"]).name for row in _rows(tmp_path / "out")) == ["000.png", "001.png"]
    again = runner.invoke(app, ["predict", *named, "--out", str(tmp_path / "out"), "--overwrite", *TINY_OPTIONS])
    assert again.exit_code == 0 and len(_rows(tmp_path / "out")) == 2, again.output


def test_predict_files_scores_each_file_once_whatever_the_caller_passes(tmp_path, zeroshot):
    [path] = _images(tmp_path / "in", 1)
    summary = predict_files(zeroshot, [path, path, Path(str(path).replace("/in/", "/in/./"))], tmp_path / "out", 0.5, show_progress=False)
    assert len(summary.rows) == 1 and len(_rows(tmp_path / "out")) == 1


# ---------------------------------------------------------------- link cycles


def test_a_cycle_of_links_is_one_skipped_entry_each_and_the_rest_is_scored(tmp_path):
    folder = tmp_path / "in"
    _images(folder, 1)
    os.symlink("b.png", folder / "a.png")
    os.symlink("a.png", folder / "b.png")
    os.symlink("self.png", folder / "self.png")
    found = find_images([folder, folder / "self.png"], [".png"])
    assert [path.name for path in found.paths] == ["000.png"]
    reasons = {path.name: reason for path, reason in found.skipped}
    assert set(reasons) == {"a.png", "b.png", "self.png"} and all("symbolic link in a cycle" in r for r in reasons.values())
    result = runner.invoke(app, ["predict", str(folder), "--out", str(tmp_path / "out"), *TINY_OPTIONS])
    assert result.exit_code == 0 and "symbolic link in a cycle" in result.output, result.output
    assert len(_rows(tmp_path / "out")) == 1


# ---------------------------------------------------------------- --out equal to the input folder


@pytest.mark.parametrize("again", ["--resume", "--overwrite"])
def test_out_equal_to_the_input_folder_never_scores_its_own_results(tmp_path, again):
    folder = tmp_path / "ov"
    _images(folder, 2)
    first = runner.invoke(app, ["predict", str(folder), "--out", str(folder), *TINY_OPTIONS])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["predict", str(folder), "--out", str(folder), again, *TINY_OPTIONS])
    assert second.exit_code == 0, second.output
    assert sorted(Path(row["path"]).name for row in _rows(folder)) == ["000.png", "001.png"]
    assert sorted(path.name for path in (folder / "maps").iterdir() if not path.name.startswith(".")) == ["000.png", "001.png"]


# ---------------------------------------------------------------- smaller points


def test_a_junk_weights_file_says_what_the_file_should_be(tmp_path):
    from zsad.clip_weights import WeightsUnavailableError, read_weight_file

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, this is no weight file" * 10)
    with pytest.raises(WeightsUnavailableError) as caught:
        read_weight_file(junk)
    message = str(caught.value)
    assert "not a weight file zsad reads" in message and ".safetensors" in message and "damaged" in message
    assert len(message.splitlines()) == 1 and "weights_only" not in message


def test_the_services_400_replies_show_no_server_path(zeroshot):
    from fastapi.testclient import TestClient

    from zsad.serve import ServeSettings, create_app

    with TestClient(create_app(zeroshot, ServeSettings())) as client:
        reply = client.post("/predict", files=[("file", ("notes.png", b"hello, not an image", "image/png"))])
    detail = reply.json()["detail"]
    assert reply.status_code == 400 and detail.startswith("notes.png: not a readable image")
    assert "zsad-upload-" not in detail and "/tmp" not in detail and "upload.png" not in detail


def test_clinicdb_pointed_at_the_download_says_where_original_is(tmp_path):
    from zsad.data import build_dataset
    from zsad.data.layouts.common import DataLayoutError

    for kind in ("PNG", "TIF"):
        (tmp_path / "CVC-ClinicDB" / kind / "Original").mkdir(parents=True)
        (tmp_path / "CVC-ClinicDB" / kind / "Ground Truth").mkdir(parents=True)
    with pytest.raises(DataLayoutError) as caught:
        build_dataset(f"clinicdb:{tmp_path / 'CVC-ClinicDB'}", image_size=64)
    message = str(caught.value)
    assert "holding Original/" in message and f"clinicdb:{tmp_path / 'CVC-ClinicDB' / 'TIF'}" in message


def test_own_state_is_one_rule_for_saving_loading_and_hashing():
    from zsad.checkpoints import own_state

    with pytest.warns(UserWarning, match="untrained"):
        detector = build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64)
    own = own_state(detector.state_dict())
    assert own.keys() == detector.trainable_state_dict().keys() and own
    assert not any(key.startswith("backbone.") for key in own)
    assert torch.equal(next(iter(own.values())), next(iter(detector.trainable_state_dict().values())))
