"""Issue 11, items 4-7: every fault a user can make gets one clear line at once: values
that make no sense are refused at parse time, a trainable method needs a checkpoint (or
an explicit --allow-untrained), damaged run files are named, and --resume never loops."""
from __future__ import annotations

import pytest
from data_factories import SHARED_DATA  # noqa: F401  (tests/ on the path, as for the other CLI tests)
from PIL import Image
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data.synth import generate_mvtec_like

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["checker"], size=64, n_train=1, n_good=1, n_defect_per_kind=1)
    return f"mvtec:{root}"


@pytest.mark.parametrize("command, option, value, complaint", [
    (["predict", "x.png", "--out", "o"], "--image-size", "0", "greater than or equal to 16"),
    (["predict", "x.png", "--out", "o"], "--batch-size", "-2", "greater than or equal to 1"),
    (["predict", "x.png", "--out", "o"], "--device", "tpu", "'tpu' is not a device zsad can use"),
    (["predict", "x.png", "--out", "o"], "--precision", "fp16", "'fp16' is not one of fp32, bf16"),
    (["test", "--data", "mvtec:x", "--out", "o"], "--score-normalisation", "minmax", "'minmax' is not one of none, per-class-minmax"),
    (["train", "--data", "mvtec:x", "--out", "o"], "--batch-size", "-1", "greater than or equal to 1"),
    (["train", "--data", "mvtec:x", "--out", "o"], "--lr", "-0.1", "-0.1 must be a finite number above 0"),
    (["train", "--data", "mvtec:x", "--out", "o"], "--seed", "-5", "greater than or equal to 0"),
    (["train", "--data", "mvtec:x", "--out", "o"], "--split", "train", "'train' is not one of test, all"),
    (["benchmark", "--train", "mvtec:x", "--test", "mvtec:y", "--out", "o"], "--epochs", "0", "greater than or equal to 1"),
    (["demo"], "--image-size", "4", "greater than or equal to 16"),
])
def test_nonsense_values_are_refused_at_parse_time(tmp_path, command, option, value, complaint):
    result = runner.invoke(app, [*command, option, value])
    assert result.exit_code == 2  # click's usage error: nothing was loaded
    assert f"Invalid value for '{option}'" in _said(result) and complaint in _said(result)


def test_a_trainable_method_without_checkpoint_is_refused_unless_asked_for(tmp_path):
    Image.new("RGB", (32, 32), (90, 30, 60)).save(tmp_path / "a.png")
    args = ["predict", str(tmp_path / "a.png"), "--method", "moeclip", *TINY]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "o1")])
    assert refused.exit_code == 1
    assert "--method moeclip needs a trained model: pass --checkpoint RUN_DIR" in _said(refused)
    assert "--allow-untrained" in _said(refused) and "UserWarning" not in refused.output
    assert not (tmp_path / "o1").exists()
    allowed = runner.invoke(app, [*args, "--out", str(tmp_path / "o2"), "--allow-untrained"])
    assert allowed.exit_code == 0, allowed.output
    assert "UNTRAINED adapters" in _said(allowed) and "UserWarning" not in allowed.output


def test_damaged_run_files_are_named_and_resume_continues_from_the_intact_epoch(tmp_path, data_spec):
    out = tmp_path / "run"
    train = ["train", "--method", "moeclip", "--data", data_spec, "--out", str(out), "--epochs", "2", "--max-steps-per-epoch", "1", *TINY]
    assert runner.invoke(app, train).exit_code == 0
    state = out / "checkpoints" / "epoch_002.train_state.pt"
    state.write_bytes(state.read_bytes()[:500])
    (out / "model.safetensors").unlink()
    damaged = runner.invoke(app, ["train", "--out", str(out), "--resume", *TINY])
    assert damaged.exit_code == 1 and "Traceback" not in damaged.output
    said = _said(damaged)
    assert "epoch_002.train_state.pt cannot be read" in said and "--resume-epoch 1" in said
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume-epoch", "1", *TINY])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "model.safetensors").is_file()

    (out / "config.json").write_text('{"method": "moeclip", ')  # cut short
    garbage = runner.invoke(app, ["train", "--out", str(out), "--resume", *TINY])
    assert garbage.exit_code == 1 and f"{out / 'config.json'} is damaged" in _said(garbage)


def test_resume_without_a_completed_epoch_starts_again_and_says_so(tmp_path, data_spec):
    out = tmp_path / "run"
    train = ["train", "--method", "moeclip", "--data", data_spec, "--out", str(out), "--epochs", "1", "--max-steps-per-epoch", "1", *TINY]
    assert runner.invoke(app, train).exit_code == 0
    for path in (out / "checkpoints").iterdir():  # as after a kill during epoch 1
        path.unlink()
    (out / "model.safetensors").unlink()
    again = runner.invoke(app, ["train", "--out", str(out), "--resume", *TINY])
    assert again.exit_code == 0, again.output
    assert "no epoch of the run" in _said(again) and "starting it again from epoch 1" in _said(again)
    assert (out / "model.safetensors").is_file()
    fresh = runner.invoke(
        app,
        [
            "train",
            "--method",
            "moeclip",
            "--data",
            data_spec,
            "--out",
            str(tmp_path / "new"),
            "--resume",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            *TINY,
        ],
    )
    assert fresh.exit_code == 0 and "holds no earlier run" in _said(fresh)
