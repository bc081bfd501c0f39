"""Random-weight runs repeat exactly: a checkpoint trained on the random backbone is
tested on that same backbone in any process, and `train` + `test` in two processes equals
the same in one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import zsad
from zsad.checkpoints import read_checkpoint
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.run_folder import resolve_checkpoint

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]
TRAIN = ["--method", "moeclip", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "2", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("repro")
    generate_mvtec_like(root / "aux", categories=["stripes"], n_train=1, n_good=2, n_defect_per_kind=1, size=32)
    generate_mvtec_like(root / "target", categories=["disc"], n_train=1, n_good=2, n_defect_per_kind=1, size=32, seed=1)
    return {"train": f"mvtec:{root / 'aux'}", "test": f"mvtec:{root / 'target'}"}


def _in_process(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _in_subprocess(*args: str) -> None:
    """Run `zsad ARGS` in a fresh interpreter importing this same zsad source tree."""
    source_root = str(Path(zsad.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source_root, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run([sys.executable, "-m", "zsad", *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def _metrics(folder: Path) -> dict:
    report = json.loads((folder / "metrics.json").read_text())
    return {"per_class": report["per_class"], "mean": report["mean"], "weights": report["weights"]}


def test_two_test_runs_of_one_random_weight_checkpoint_give_identical_metrics(data, tmp_path):
    run = tmp_path / "run"
    _in_process("train", "--data", data["train"], "--out", str(run), *TRAIN, *TINY)
    _, stored = read_checkpoint(resolve_checkpoint(run))
    assert stored["backbone"]["weights"] == "random:0"  # the seed is part of the checkpoint
    for name in ("first", "second"):
        torch.manual_seed(len(name))  # a different global RNG state before each run
        _in_process("test", "--checkpoint", str(run), "--data", data["test"], "--out", str(tmp_path / name),
                    "--device", "cpu", "--quiet")
    first, second = _metrics(tmp_path / "first"), _metrics(tmp_path / "second")
    assert first == second
    assert first["weights"] == "random:0"


def test_train_and_test_in_two_processes_equal_both_in_one(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _in_process("train", "--data", data["train"], "--out", str(one / "run"), *TRAIN, *TINY)
    _in_process("test", "--checkpoint", str(one / "run"), "--data", data["test"], "--out", str(one / "test"),
                "--device", "cpu", "--quiet")
    _in_subprocess("train", "--data", data["train"], "--out", str(two / "run"), *TRAIN, *TINY)
    _in_subprocess("test", "--checkpoint", str(two / "run"), "--data", data["test"], "--out", str(two / "test"),
                   "--device", "cpu", "--quiet")
    tensors_one, _ = read_checkpoint(resolve_checkpoint(one / "run"))
    tensors_two, _ = read_checkpoint(resolve_checkpoint(two / "run"))
    assert tensors_one.keys() == tensors_two.keys()
    for key, value in tensors_one.items():
        assert torch.equal(tensors_two[key], value), key
    assert _metrics(one / "test") == _metrics(two / "test")


def test_another_seed_gives_another_backbone_and_other_scores(data, tmp_path):
    for weights in ("random:0", "random:1"):
        _in_process("test", "--method", "zeroshot", "--data", data["test"], "--out", str(tmp_path / weights.replace(":", "-")),
                    "--backbone", "zsad-tiny", "--weights", weights, "--image-size", "32", "--device", "cpu", "--quiet")
    seed0, seed1 = _metrics(tmp_path / "random-0"), _metrics(tmp_path / "random-1")
    assert (seed0["weights"], seed1["weights"]) == ("random:0", "random:1")
    assert seed0["mean"] != seed1["mean"]
