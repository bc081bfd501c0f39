"""The CLI derives its options: one model option group (predict, test, analyze), one
training option group (train, benchmark), the method list from the registry, and no
warning filter left behind by a command."""
from __future__ import annotations

import warnings
from dataclasses import fields

import pytest
from typer.testing import CliRunner

from zsad.cli import app
from zsad.cli.options import ModelOptions, TrainingOptions, option_group
from zsad.methods import available_methods, method_class


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("command", [("predict",), ("test",), ("analyze", "experts")])
def test_model_options_are_one_group(command):
    text = _help(*command)
    for field in fields(ModelOptions):
        assert _flag(field.name) in text, field.name


@pytest.mark.parametrize("command", [("train",), ("benchmark",)])
def test_training_options_are_one_group(command):
    text = _help(*command)
    for field in fields(TrainingOptions):
        assert _flag(field.name) in text, field.name


def test_method_help_lists_the_registry():
    # The help is written when the CLI is imported: every method of zsad.methods (and of
    # the installed plugins) is registered by then; a test-only method may come later.
    text = _help("predict")
    bundled = [name for name in available_methods() if method_class(name).__module__.startswith("zsad.methods.")]
    assert len(bundled) >= 2 and all(name in text for name in bundled)


def test_an_option_group_refuses_a_redeclared_option():
    def command(model: ModelOptions, device: str = "cpu") -> None:
        """A command that declares --device itself."""

    with pytest.raises(TypeError, match="device"):
        option_group("model", ModelOptions)(command)


def test_commands_leave_the_warning_filters_as_they_were(tmp_path):
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (120, 30, 60)).save(image)
    arguments = [
        "predict",
        str(image),
        "--backbone",
        "zsad-tiny",
        "--weights",
        "random",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--quiet",
    ]
    # The first run imports torch, scipy...: their imports add filters of their own.
    assert CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "first")]).exit_code == 0
    before = list(warnings.filters)
    result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert list(warnings.filters) == before
