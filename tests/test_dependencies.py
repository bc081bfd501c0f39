"""Issue 18 §5: zsad declares what it imports, and a plain install (no extras, a fresh
virtual environment) runs the command line's help and the dry run."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "zsad"


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("open_clip_torch>=2.24")."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9_.\-]+)", requirement).group(1)).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_name(r) for r in requirements}


def _imported_top_level_names() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"zsad", "__future__"}


def test_every_imported_package_is_declared():
    owners = metadata.packages_distributions()
    undeclared = {}
    for name in sorted(_imported_top_level_names()):
        distributions = {_name(d) for d in owners.get(name, [name])}
        if not distributions & _declared():
            undeclared[name] = sorted(distributions)
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def _constraints(path: Path) -> Path:
    """The versions installed here, so that the fresh environment resolves the same ones
    (and pip can take them from its cache). Read by ``pip freeze`` in a new process: this
    process's own view also lists what imported packages vendor (Ray puts its own psutil
    and colorama on the path), which the registry need not hold."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    pins = sorted(line for line in frozen if "==" in line and _name(line.split("==")[0]) != "zsad")
    path.write_text("\n".join(pins) + "\n")
    return path


@pytest.mark.slow
def test_a_plain_install_runs_help_and_the_dry_run(tmp_path):
    """`pip install <repo>` (no extras) into a new virtual environment, then `zsad --help`
    and `zsad predict DIR --backbone zsad-tiny --weights random` with its console script."""
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    command = [
        str(python), "-m", "pip", "install", "--disable-pip-version-check",
        "-c", str(_constraints(tmp_path / "pins.txt")), str(ROOT),
    ]
    install = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-2000:]  # stdout names a conflict
    zsad = environment / "bin" / "zsad"
    helped = subprocess.run([str(zsad), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "predict" in helped.stdout, helped.stderr
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for index in range(2):
        Image.new("RGB", (48, 40), (40 * index, 90, 160)).save(images / f"{index}.png")
    predicted = subprocess.run(
        [str(zsad), "predict", str(images), "--backbone", "zsad-tiny", "--weights", "random", "--out", str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (tmp_path / "out" / "scores.csv").is_file() and "2 images scored" in predicted.stdout
