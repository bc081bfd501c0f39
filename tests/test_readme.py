"""Issue 11, item 14: every `zsad` command line the README shows runs as written.

The command lines are read from the README itself (```bash blocks and inline `zsad ...`
spans of four words or more), so the README cannot drift from the CLI. Only three things are changed before a
line runs, none of them its command or options:

* the README's example data paths (``/data/mvtec_ad``, ``path/to/images/``, ``KIND:PATH``...)
  point to small generated data sets in the layout the path names;
* options that make the run small are appended where the command has them and the line
  does not set them: the tiny random-weight model at 64 px on the CPU, one training epoch
  of one step, two images per analysed data set, no worker processes, no progress bars;
* ``torchrun ... zsad train`` runs its ``zsad train`` part in this process (one rank);
* runs the README names without training them stand for runs it trains (RUN_ALIASES).

Lines run in the README's order, training lines first (later lines use their runs), each
in its own scratch folder that links to the shared ``runs/`` (recipes are bundled: ``--config NAME``).
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from data_factories import make_btad_tree, make_mvtec_like_tree
from new_layout_factories import (
    make_mvtec_ad2_tree,
    make_mvtec_loco_tree,
    make_realiad_tree,
    write_aaclip_jsonl_for,
    write_anomalyclip_meta_for,
)
from PIL import Image
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data.synth import generate_mvtec_like, generate_visa_like

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
runner = CliRunner()

# Runs the README uses without a line that trains them: its short name for a trained MoECLIP
# run; it stands for a run the README does train.
RUN_ALIASES = {"moeclip": "moeclip-visa"}

# One epoch of one step, and few images to analyse: the recipes' 15-20 epochs, each with
# its checkpoint, log and plot, made most of this test's time (over 5 minutes on 2 cores).
SMALL_RUN = {
    "--backbone": "zsad-tiny", "--weights": "random", "--image-size": "64", "--device": "cpu",
    "--epochs": "1", "--max-steps-per-epoch": "1", "--max-images": "2", "--selection-maps": "1",
    "--num-workers": "0", "--quiet": None,
}


def readme_command_lines(text: str) -> list[str]:
    """Every `zsad` command line of the README, continuation lines joined, comments and
    the brackets around optional parts removed, a torchrun prefix dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += block.replace("\\\n", " ").splitlines()
    # Inline spans of four words or more are examples; shorter ones name a command or an
    # option in the prose (`zsad data`, `zsad train --seed`).
    lines += [span for span in re.findall(r"`(zsad [^`]+)`", text) if len(span.split()) >= 4]
    commands = []
    for line in lines:
        line = re.sub(r"\s#.*$", "", line).strip()
        line = re.sub(r"^torchrun .*?\bzsad\b", "zsad", line)
        line = re.sub(r"\[([^\]]*)\]", r"\1", line)
        if line.startswith("zsad "):
            commands.append(" ".join(line.split()))
    return commands


def _command_options(words: list[str]) -> set[str]:
    command = typer.main.get_command(app)
    for word in words:
        if not hasattr(command, "commands") or word not in command.commands:
            break
        command = command.commands[word]
    return {opt for parameter in command.params for opt in parameter.opts}


def _small(words: list[str]) -> list[str]:
    """Append SMALL_RUN options that the command has and the line does not set."""
    accepted = _command_options(words)
    extra: list[str] = []
    for option, value in SMALL_RUN.items():
        if option in accepted and option not in words:
            extra += [option] if value is None else [option, value]
    return words + extra


def _example_data(root: Path) -> dict[str, str]:
    """README example path -> generated data in that layout."""
    generate_mvtec_like(root / "mvtec", categories=["disc", "ring"], size=64, n_train=2, n_good=1, n_defect_per_kind=1)
    for old, new in (("disc", "bottle"), ("ring", "screw")):  # the README's MVTec-AD category names
        (root / "mvtec" / old).rename(root / "mvtec" / new)
    generate_visa_like(root / "visa", categories=["tile"], size=64, n_good=2, n_defect_per_kind=1)
    make_btad_tree(root / "btad")
    make_mvtec_like_tree(root / "mpdd", mask_suffix="_mask")
    test_images = sorted((root / "mvtec" / "screw" / "test").rglob("*.png"))
    for folder in ("kvasir/images", "kvasir/masks", "brain/yes", "brain/no", "images"):
        (root / folder).mkdir(parents=True)
    for index, path in enumerate(test_images):
        Image.open(path).convert("RGB").save(root / "kvasir" / "images" / f"{index}.jpg")
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (20, 20, 40, 40))
        mask.save(root / "kvasir" / "masks" / f"{index}.jpg")
        shutil.copy(path, root / "brain" / ("yes" if path.parent.name != "good" else "no") / path.name)
        shutil.copy(path, root / "images" / f"{index}.png")
    shutil.copy(test_images[0], root / "more.png")
    # a line's good parts: enough for the README's --false-positive-rate 0.05 (19)
    generate_mvtec_like(root / "line", categories=["disc"], size=64, n_train=20, n_good=1, n_defect_per_kind=1)
    (root / "line" / "disc").rename(root / "line" / "metal_nut")
    make_mvtec_ad2_tree(root / "ad2", categories=("can",), n_validation=20)  # calibrates at 0.05 (19)
    make_realiad_tree(root / "realiad")
    make_mvtec_loco_tree(root / "loco")
    write_anomalyclip_meta_for(root / "mvtec")
    write_aaclip_jsonl_for(root / "mvtec", root / "AA-CLIP" / "dataset" / "metadata" / "MVTec" / "full-shot.jsonl")
    return {
        "/data/MVTec-AD-2": str(root / "ad2"),
        "/data/Real-IAD": str(root / "realiad"),
        "/data/MVTec-LOCO": str(root / "loco"),
        "/data/AA-CLIP": str(root / "AA-CLIP"),
        "/data/mvtec_ad": str(root / "mvtec"),
        "/data/VisA": str(root / "visa"),
        "/data/BTAD": str(root / "btad"),
        "/data/MPDD": str(root / "mpdd"),
        "/data/Kvasir-SEG": str(root / "kvasir"),
        "/data/brain": str(root / "brain"),
        "path/to/images/": str(root / "images"),
        "images/": str(root / "images"),
        "more.png": str(root / "more.png"),
        "KIND:PATH": f"mvtec:{root / 'mvtec'}",
        "OUT": str(root / "synth-out"),
        "good-examples/": str(root / "mvtec" / "screw" / "train" / "good"),
        "/data/line": str(root / "line"),
        "good-parts/": str(root / "line" / "metal_nut" / "train" / "good"),
        "line-images/": str(root / "line" / "metal_nut" / "test"),
        "calibration.json": str(root / "calibration.json"),
        "calibration-line.json": str(root / "calibration-line.json"),
        "calibration-ad2.json": str(root / "calibration-ad2.json"),
    }


def _publish_on_hub_cache(cache: Path, repo: str, run: Path) -> None:
    """Lay out a run folder in a Hugging Face Hub cache as huggingface_hub stores it
    (blobs, a snapshot of links, refs main and v1), for the README's hf-hub: lines."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    for name in ("model.safetensors", "config.json"):
        blob = folder / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / name, blob)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..", "..", "blobs", name))
    (folder / "refs").mkdir()
    for ref in ("main", "v1"):
        (folder / "refs" / ref).write_text(commit)


def _substitute(words: list[str], paths: dict[str, str]) -> list[str]:
    replaced = []
    for word in words:
        if word in paths:
            word = paths[word]
        else:
            for example, generated in paths.items():
                if example.startswith("/data/"):
                    word = word.replace(example, generated)
        replaced.append(word)
    return replaced


def test_training_lines_run_one_short_epoch_unless_they_set_epochs():
    lines = readme_command_lines(README.read_text(encoding="utf-8"))
    for line in lines:
        words = shlex.split(line)[1:]
        if words[0] in ("train", "benchmark", "demo") and "--epochs" not in words:
            small = _small(words)
            assert small[small.index("--epochs") + 1] == "1", line
            if words[0] != "demo":
                assert small[small.index("--max-steps-per-epoch") + 1] == "1", line


def test_the_readme_shows_data_info_as_the_command_takes_it():
    lines = readme_command_lines(README.read_text(encoding="utf-8"))
    info = [line for line in lines if line.startswith("zsad data info")]
    assert info and all("--data" not in line for line in info)


def test_every_readme_command_line_runs(tmp_path, monkeypatch):
    lines = readme_command_lines(README.read_text(encoding="utf-8"))
    assert len(lines) >= 10 and any(line.startswith("zsad predict") for line in lines)
    paths = _example_data(tmp_path / "data")
    shared = tmp_path / "shared"  # what lines share: the runs they train
    (shared / "runs").mkdir(parents=True)
    ordered = [line for line in lines if line.startswith("zsad train")] + [line for line in lines if not line.startswith("zsad train")]
    # `zsad serve` builds its app and would then serve until stopped: here it returns.
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for number, line in enumerate(ordered):
        work = tmp_path / f"line{number:02d}"  # each line its own folder: several write results/
        work.mkdir()
        (work / "runs").symlink_to(shared / "runs")
        monkeypatch.chdir(work)
        if not line.startswith("zsad train"):
            for alias, trained in RUN_ALIASES.items():
                if not (shared / "runs" / alias).exists():
                    (shared / "runs" / alias).symlink_to(shared / "runs" / trained)
        if "hf-hub:ORG/NAME" in line and not (tmp_path / "hub").exists():
            _publish_on_hub_cache(tmp_path / "hub", "ORG/NAME", shared / "runs" / RUN_ALIASES["moeclip"])
        words = _small(_substitute(shlex.split(line)[1:], paths))
        result = runner.invoke(app, words)
        assert result.exit_code == 0, f"README line {line!r} (run as {' '.join(words)}):\n{result.output}"
