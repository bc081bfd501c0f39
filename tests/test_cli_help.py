"""Issue 18 §1: every help page is whole. Lists of methods and data kinds come from the
code (the method table, LAYOUTS), defaults from TrainingConfig, and no placeholder is left
unfilled; rendering every help page imports neither torch nor open_clip."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from zsad.cli import app
from zsad.cli.help_text import fill
from zsad.data.layouts import LAYOUTS
from zsad.engine.train_config import TrainingConfig
from zsad.method_names import BUILTIN_METHODS

SRC = Path(__file__).resolve().parents[1] / "src"
# Typer writes a required argument as {name} in the usage line; anything else in braces is
# a placeholder left unfilled.
UNFILLED = re.compile(r"\{[A-Za-z_:.]+\}")


def _commands(group, prefix: tuple[str, ...] = ()):
    """(path, command) of every command and command group under ``group``."""
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


ROOT = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT))


def _rendered(path: tuple[str, ...]):
    """The help page of ``zsad PATH`` and its command, help texts filled."""
    command = COMMANDS[path]
    context = command.context_class(command, info_name=" ".join(("zsad", *path)), terminal_width=80)
    return command.get_help(context), command


def _option_help(command, flag: str) -> str | None:
    for parameter in command.params:
        if flag in getattr(parameter, "opts", ()):
            return " ".join(parameter.help.split())
    return None


def test_every_command_is_listed():
    assert {"predict", "test", "demo", "train", "benchmark", "serve", "export", "analyze", "data"} <= {p[0] for p in COMMANDS}
    assert {("data", "synth"), ("data", "info"), ("analyze", "experts"), ("analyze", "losses")} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_has_no_unfilled_placeholder(path):
    text, _ = _rendered(path)
    body = [line for line in text.splitlines() if not line.startswith("Usage:")]
    assert not UNFILLED.search("\n".join(body)), text


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_method_and_kind_lists_are_complete(path):
    _, command = _rendered(path)
    method_help = _option_help(command, "--method")
    if method_help is not None:
        expected = [name for name, trainable in BUILTIN_METHODS.items() if trainable or path != ("train",)]
        missing = [name for name in expected if not re.search(rf"\b{name}\b", method_help)]
        assert not missing, f"zsad {' '.join(path)} --method help lacks {missing}: {method_help}"
    for parameter in command.params:
        text = " ".join((getattr(parameter, "help", None) or "").split())
        if "KIND:PATH" in text:
            missing = [kind for kind in LAYOUTS if not re.search(rf"\b{kind}\b", text)]
            assert not missing, f"zsad {' '.join(path)} {parameter.name}: kinds {missing} missing"


def test_training_defaults_come_from_the_training_config():
    _, command = _rendered(("train",))
    defaults = TrainingConfig()
    assert f"else {defaults.epochs})" in _option_help(command, "--epochs")
    assert f"else {defaults.lr})" in _option_help(command, "--lr")
    assert f"else {defaults.batch_size})" in _option_help(command, "--batch-size")


def test_fill_knows_every_placeholder_it_is_given():
    assert fill("{trainable_methods}") == ", ".join(sorted(name for name, trainable in BUILTIN_METHODS.items() if trainable))
    assert fill("{data_kinds}") == ", ".join(LAYOUTS)
    assert fill("{default:seed}") == str(TrainingConfig().seed)
    assert fill("{unknown}") == "{unknown}"  # left for the placeholder test to catch


def test_every_help_page_renders_without_torch():
    """All help pages in one fresh interpreter: torch and open_clip stay unimported."""
    script = (
        "import sys, typer.main\nfrom zsad.cli import app\n"
        "def walk(group, prefix):\n"
        "    for name, command in group.commands.items():\n"
        "        command.get_help(command.context_class(command, info_name=' '.join((*prefix, name))))\n"
        "        if hasattr(command, 'commands'):\n"
        "            walk(command, (*prefix, name))\n"
        "root = typer.main.get_command(app)\n"
        "root.get_help(root.context_class(root, info_name='zsad'))\n"
        "walk(root, ('zsad',))\n"
        "print('loaded:' + ','.join(name for name in ('torch', 'open_clip', 'torchvision', 'numpy') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "loaded:"
