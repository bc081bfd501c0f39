"""Issue 18 §4 and §7: a user's mistake is one line (a ``ZsadError``), reported before torch
is imported when no model is needed to see it; anything else is a bug that keeps its
traceback and asks to be reported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zsad.checkpoints import CheckpointError
from zsad.cli import app
from zsad.cli.error_handler import REPORT_HINT
from zsad.clip_weights import WeightsUnavailableError
from zsad.data.layouts.common import DataLayoutError
from zsad.engine.onnx_export import OnnxExportError
from zsad.engine.run_folder import DamagedCheckpointError, RunDirectoryNotEmptyError
from zsad.engine.training import TrainingError
from zsad.errors import InvalidInputError, MissingInputError, ZsadError
from zsad.fileio import OutputExistsError
from zsad.hub import HubReferenceError
from zsad.imageio import ImageReadError, MaskSizeError
from zsad.output_lock import OutputFolderBusyError, OutputFolderError
from zsad.score_table import ResumeMismatchError
from zsad.serve.app import UploadError
from zsad.serve.batching import QueueFullError

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (InvalidInputError, ValueError), (MissingInputError, FileNotFoundError), (CheckpointError, ValueError),
        (DamagedCheckpointError, ValueError), (WeightsUnavailableError, RuntimeError), (DataLayoutError, ValueError),
        (OnnxExportError, ValueError), (RunDirectoryNotEmptyError, FileExistsError), (TrainingError, RuntimeError),
        (OutputExistsError, FileExistsError), (HubReferenceError, ValueError), (ImageReadError, Exception),
        (MaskSizeError, ValueError), (OutputFolderError, RuntimeError), (OutputFolderBusyError, RuntimeError),
        (ResumeMismatchError, ValueError), (UploadError, ValueError), (QueueFullError, RuntimeError),
    ],
)
def test_every_user_error_is_a_zsad_error_and_keeps_its_builtin_base(error, builtin):
    assert issubclass(error, ZsadError) and issubclass(error, builtin)


def _early_refusals(tmp_path: Path) -> dict[str, list[str]]:
    """Mistakes the command line sees without a model: name -> argv."""
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (90, 20, 200)).save(image)
    (tmp_path / "data").mkdir()
    out = str(tmp_path / "out")
    tiny = ["--backbone", "zsad-tiny", "--weights", "random", "--device", "cpu"]
    return {
        "unknown data kind": ["test", "--data", f"nokind:{tmp_path}", "--out", out, *tiny],
        "data folder missing": ["test", "--data", f"mvtec:{tmp_path / 'missing'}", "--out", out, *tiny],
        "shot seed without shots": ["test", "--data", f"mvtec:{tmp_path / 'data'}", "--shot-seed", "1", "--out", out, *tiny],
        "recipe missing": ["predict", str(image), "--config", str(tmp_path / "missing.yaml"), "--out", out, *tiny],
        "checkpoint missing": ["predict", str(image), "--checkpoint", str(tmp_path / "missing"), "--out", out, *tiny],
        "trainable method without checkpoint": ["predict", str(image), "--method", "moeclip", "--out", out, *tiny],
        "no images": ["predict", str(tmp_path / "data"), "--out", out, *tiny],
        "reference missing": ["predict", str(image), "--reference", str(tmp_path / "none"), "--out", out, *tiny],
        "training a training-free method": ["train", "--method", "zeroshot", "--data", f"mvtec:{tmp_path / 'data'}", "--out", out],
        "training data missing": ["train", "--method", "moeclip", "--data", f"visa:{tmp_path / 'missing'}", "--out", out],
        "benchmark data kind": ["benchmark", "--train", f"visa:{tmp_path}", "--test", "bogus:/x", "--out", out],
        "analysis data missing": ["analyze", "experts", "--data", f"mvtec:{tmp_path / 'missing'}", "--out", out, *tiny],
        "jsonl data root missing": ["test", "--data", f"aaclip-jsonl:{image}:{tmp_path / 'missing'}", "--out", out, *tiny],
        "monitor data missing": ["train", "--method", "moeclip", "--data", f"mvtec:{tmp_path / 'data'}",
                                 "--monitor", f"mvtec:{tmp_path / 'missing'}", "--out", out],
        "benchmark recipe file missing": ["benchmark", "--test", f"mvtec:{tmp_path / 'data'}", "--config", "missing.yaml", "--out", out],
        "seeds malformed": ["benchmark", "--test", f"mvtec:{tmp_path / 'data'}", "--seeds", "0,x", "--out", out],
    }


def test_mistakes_are_one_line_and_found_before_torch_is_imported(tmp_path):
    """Each refusal in a fresh interpreter: exit status 1, one line on stderr, and neither
    torch nor open_clip imported (so the answer comes at once)."""
    cases = _early_refusals(tmp_path)
    script = (
        "import json, sys\nfrom typer.testing import CliRunner\nfrom zsad.cli import app\n"
        f"cases = json.loads({json.dumps(json.dumps(cases))})\n"
        "results = {}\n"
        "for name, argv in cases.items():\n"
        "    result = CliRunner().invoke(app, argv)\n"
        "    results[name] = [result.exit_code, result.stderr, [m for m in ('torch', 'open_clip') if m in sys.modules]]\n"
        "print(json.dumps(results))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (exit_code, stderr, heavy) in results.items():
        lines = stderr.strip().splitlines()
        assert exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {exit_code} {stderr!r}"
        assert heavy == [], f"{name} imported {heavy} before refusing"


def test_errors_found_with_the_model_loaded_are_one_line_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    damaged = runner.invoke(app, ["train", "--out", str(run), "--resume", "--quiet"])
    assert damaged.exit_code == 1 and damaged.stderr.strip().startswith("error: ") and len(damaged.stderr.strip().splitlines()) == 1
    assert "is damaged" in damaged.stderr


def test_an_internal_error_keeps_its_traceback_and_asks_to_be_reported(tmp_path, monkeypatch):
    import zsad.data.factory

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(zsad.data.factory, "build_dataset", broken)
    result = runner.invoke(app, ["data", "info", f"mvtec:{tmp_path}"])
    assert isinstance(result.exception, ValueError) and str(result.exception) == "a bug, not the user's input"
    assert " ".join(REPORT_HINT.split()) in " ".join(result.stderr.split())
    assert "error:" not in result.stderr


def test_a_user_error_inside_the_library_is_one_line(tmp_path):
    result = runner.invoke(app, ["data", "info", f"mvtec:{tmp_path / 'nothing'}"])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
