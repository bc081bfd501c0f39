"""`zsad train` end to end on the tiny random backbone and generated MVTec-layout data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zsad.checkpoints import read_checkpoint
from zsad.cli import app
from zsad.cli.training import resolve_settings
from zsad.data.synth import generate_mvtec_like
from zsad.engine.run_folder import read_run_config, resolve_checkpoint
from zsad.engine.train_log import read_train_log
from zsad.recipes import Recipe

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["disc"], n_train=1, n_good=2, n_defect_per_kind=1, size=32)
    return f"mvtec:{root}"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_help_explains_every_option():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for option in (
        "--method", "--data", "--out", "--config", "--epochs", "--batch-size", "--lr", "--seed", "--split",
        "--max-steps-per-epoch", "--activation-checkpointing", "--precision", "--device", "--num-workers",
        "--backbone", "--weights", "--image-size", "--cache-dir", "--class-names", "--resume", "--overwrite", "--quiet",
    ):
        assert option in result.output, option


def test_train_then_resume_with_more_epochs(data_spec, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--method", "moeclip", "--data", data_spec, "--out", str(out), "--epochs", "1",
                    "--max-steps-per-epoch", "1", "--lr", "1e-4", *TINY)
    assert result.exit_code == 0, result.output
    assert "zsad test --checkpoint" in result.output and "model.safetensors" in result.output
    _, stored = read_checkpoint(resolve_checkpoint(out))
    assert stored["method"] == "moeclip" and stored["training"]["lr"] == 1e-4 and stored["data"] == [data_spec]
    assert stored["backbone"]["model_name"] == "zsad-tiny" and stored["backbone"]["image_size"] == 32

    refused = invoke("train", "--method", "moeclip", "--data", data_spec, "--out", str(out), *TINY)
    assert refused.exit_code == 1 and "--resume" in refused.output

    # Resuming needs only the folder: the run's stored settings are the base.
    resumed = invoke("train", "--out", str(out), "--resume", "--epochs", "2", "--device", "cpu", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    _, rows = read_train_log(out / "train_log.csv")
    assert [(row["epoch"], row["step"]) for row in rows] == [(1, 1), (2, 2)]
    changed = invoke("train", "--out", str(out), "--resume", "--epochs", "3", "--lr", "0.1", "--device", "cpu", "--quiet")
    assert changed.exit_code == 1 and "training.lr" in changed.output


def test_recipe_is_the_base_and_options_override_it(data_spec, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "method: moeclip\nmethod_config:\n  num_experts: 2\n  top_k: 1\n"
        "training:\n  epochs: 5\n  lr: 0.002\n  max_steps_per_epoch: 1\n  augment: false\n"
    )
    out = tmp_path / "run"
    result = invoke("train", "--config", str(recipe), "--data", data_spec, "--out", str(out), "--epochs", "1",
                    "--split", "all", *TINY)
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "config.json").read_text())
    assert stored["method_config"]["num_experts"] == 2 and stored["method_config"]["top_k"] == 1
    training = stored["training"]
    assert (training["epochs"], training["lr"], training["augment"], training["include_train_split"]) == (1, 0.002, False, True)
    assert f"| `{data_spec}` | test + train | 7 |" in (out / "training_summary.md").read_text()


def test_user_errors_are_one_line_and_exit_1(data_spec, tmp_path):
    for args, message in [
        (["--method", "zeroshot", "--data", data_spec], "no trainable parameters"),
        (["--method", "moeclip"], "--data"),
        (["--data", data_spec], "--method"),
        (["--method", "moeclip", "--data", data_spec, "--precision", "bf16"], "bf16"),
    ]:
        result = invoke("train", *args, "--out", str(tmp_path / "run"), *TINY)
        assert result.exit_code == 1, args
        assert message in result.output, (args, result.output)
    assert invoke("train", "--out", str(tmp_path / "none"), "--resume", *TINY).exit_code == 1


def test_resolve_settings_layers(tmp_path):
    stored = {
        "method": "moeclip",
        "method_config": {"num_experts": 4, "top_k": 2},
        "backbone": {"model_name": "zsad-tiny", "weights": "random", "image_size": 32},
        "training": {"epochs": 2, "lr": 0.01},
        "data": ["mvtec:/a"],
    }
    recipe = Recipe(name="mine.yaml", method="moeclip", method_config={"top_k": 1, "rank": 4}, training={"lr": 0.02, "gamma": 0.25})
    settings = resolve_settings(recipe, stored, None, None, None, None, None, {"epochs": 4, "lr": None})
    assert settings.method == "moeclip" and settings.data == ["mvtec:/a"]
    # defaults < recipe < --config file < resumed run < command line
    assert (settings.method_config["num_experts"], settings.method_config["top_k"], settings.method_config["rank"]) == (4, 2, 4)
    assert (settings.training.epochs, settings.training.lr, settings.training.gamma) == (4, 0.01, 0.25)
    assert settings.sources["training.epochs"] == "command line" and settings.sources["training.lr"] == "resumed run"
    assert settings.sources["training.gamma"] == "config mine.yaml"
    assert (settings.model_name, settings.weights, settings.image_size) == ("zsad-tiny", "random", 32)
    other = resolve_settings(Recipe(), None, "moeclip", "mvtec:/a, VisA:b", None, None, None, {})
    assert other.data == ["mvtec:/a", f"visa:{Path('b').resolve()}"] and other.training.epochs == 20
    assert read_run_config(tmp_path) is None  # nothing was ever started there
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is damaged"):
        read_run_config(tmp_path)
