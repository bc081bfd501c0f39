"""Issue 11, item 12: the command line starts without torch (help, --version and argument
errors come at once), has --version, and its help reads well at 80 columns."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import zsad
from zsad.cli import app

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "open_clip", "torchvision")


def _modules_loaded_by(*argv: str) -> set[str]:
    """Run the CLI with ``argv`` in a fresh interpreter; which heavy modules did it import?"""
    script = (
        "import sys\nfrom zsad.cli import app\n"
        f"try:\n    app({list(argv)!r}, prog_name='zsad')\nexcept SystemExit:\n    pass\n"
        f"print('loaded:' + ','.join(name for name in {HEAVY!r} if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""})
    report = [line for line in result.stdout.splitlines() if line.startswith("loaded:")]
    assert report, result.stderr
    return {name for name in report[-1].removeprefix("loaded:").split(",") if name}


@pytest.mark.parametrize(
    "argv", [("--help",), ("--version",), ("predict", "x.png", "--out", "o", "--image-size", "0"), ("data", "synth", "--help")]
)
def test_help_version_and_argument_errors_do_not_import_torch(argv):
    assert _modules_loaded_by(*argv) == set()


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"zsad {zsad.__version__}"


def _every_command(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _every_command(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("command", [(), *_every_command(typer.main.get_command(app))])
def test_help_is_readable_at_80_columns(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output  # no option or text cut short
    for line in lines:  # an option's description starts where there is room for it
        match = re.match(r"^  (-\S.*?)  +(\S.*)$", line)
        if match:
            assert line.index(match.group(2)) <= 34, line
