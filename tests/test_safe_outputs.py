"""Issue 11: results are never lost or mixed up (output-folder lock, scores written as
produced, Ctrl-C and --resume, discovery that skips outputs and hidden entries, file
names a table can be joined on, progress in images)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zsad.api import Predictor
from zsad.cli import app
from zsad.discovery import find_images
from zsad.fileio import OutputExistsError, atomic_write_text
from zsad.output_lock import LOCK_NAME, OutputFolderBusyError, claim_output_folder

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]
SRC = Path(__file__).resolve().parents[1] / "src"


def _images(folder: Path, count: int, size=(40, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        Image.new("RGB", size, (10 * index % 255, 80, 160)).save(path)
        paths.append(path)
    return paths


def _said(result) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ 1: one run per folder


def test_a_held_output_folder_is_refused_naming_the_holder(tmp_path):
    with claim_output_folder(tmp_path / "out"):
        with pytest.raises(OutputFolderBusyError) as busy:
            with claim_output_folder(tmp_path / "out"):
                pass
    assert f"pid {os.getpid()}" in str(busy.value) and "choose another --out" in str(busy.value)
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released at the end


def test_a_lock_file_left_by_a_dead_run_does_not_block(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps({"pid": 999999, "command": "zsad predict old"}))
    with claim_output_folder(tmp_path / "out"):
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_predict_into_a_folder_another_process_holds_is_refused(tmp_path):
    _images(tmp_path / "images", 2)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from zsad.output_lock import claim_output_folder\n"
         f"with claim_output_folder({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), *TINY])
    finally:
        holder.communicate("")
    assert result.exit_code == 1
    assert f"pid {holder.pid}" in _said(result) and "in use by another zsad run" in _said(result)
    assert not (out / "scores.csv").exists()


def test_an_output_file_that_appears_after_the_check_is_not_replaced(tmp_path):
    target = tmp_path / "scores.md"
    target.write_text("someone else's")
    with pytest.raises(OutputExistsError):
        atomic_write_text(target, "ours", overwrite=False)
    assert target.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.md"]  # no temporary file left
    atomic_write_text(tmp_path / "new.md", "ours", overwrite=False)
    assert (tmp_path / "new.md").read_text() == "ours"


# ------------------------------------------------------------------ 2: Ctrl-C and --resume


def test_ctrl_c_keeps_the_done_rows_and_resume_finishes_the_rest(tmp_path, monkeypatch):
    _images(tmp_path / "images", 5)
    out = tmp_path / "out"
    real = Predictor.score_and_map
    calls = {"n": 0}

    def interrupted_on_third_batch(self, images, class_name=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, images, class_name)

    monkeypatch.setattr(Predictor, "score_and_map", interrupted_on_third_batch)
    stopped = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), "--batch-size", "2", *TINY])
    assert stopped.exit_code == 130, stopped.output
    assert "4 of 5 images done" in _said(stopped) and "--resume" in _said(stopped)
    assert [Path(row["path"]).name for row in _rows(out)] == ["000.png", "001.png", "002.png", "003.png"]
    meta = json.loads((out / "scores.json").read_text())["meta"]
    assert meta["complete"] is False and meta["n_done"] == 4 and meta["n_images"] == 5

    monkeypatch.setattr(Predictor, "score_and_map", real)
    refused = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), *TINY])
    assert refused.exit_code == 1 and "--overwrite" in _said(refused)
    other = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), "--resume", "--threshold", "0.9", *TINY])
    assert other.exit_code == 1 and "threshold" in _said(other)
    resumed = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), "--resume", *TINY])
    assert resumed.exit_code == 0, resumed.output
    assert "4 kept from the earlier run" in _said(resumed)
    rows = _rows(out)
    assert [Path(row["path"]).name for row in rows] == [f"{i:03d}.png" for i in range(5)]
    assert all((out / row["overlay"]).is_file() and (out / row["map"]).is_file() for row in rows)
    assert json.loads((out / "scores.json").read_text())["meta"]["complete"] is True


def test_each_row_is_on_disk_before_the_next_image_is_scored(tmp_path, monkeypatch):
    _images(tmp_path / "images", 3)
    out = tmp_path / "out"
    real = Predictor.score_and_map
    seen = []

    def record_rows_on_disk(self, images, class_name=None):
        seen.append(len(_rows(out)))
        return real(self, images, class_name)

    monkeypatch.setattr(Predictor, "score_and_map", record_rows_on_disk)
    result = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), "--batch-size", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert seen == [0, 1, 2]


# ------------------------------------------------------------------ 3: what is scored


def test_discovery_skips_outputs_hidden_entries_and_broken_links_and_says_so(tmp_path):
    root = tmp_path / "in"
    _images(root, 2)
    (root / "._000.png").write_bytes(b"\x00resource fork")
    _images(root / ".ipynb_checkpoints", 1)
    _images(root / "results" / "overlays", 1)
    (root / "notes.txt").write_text("not an image")
    os.symlink(tmp_path / "missing.png", root / "gone.png")
    found = find_images([root], {".png"}, exclude=[root / "results"])
    assert [p.name for p in found.paths] == ["000.png", "001.png"]
    reasons = {path.name: reason for path, reason in found.skipped}
    assert reasons["._000.png"] == "hidden file" and reasons[".ipynb_checkpoints"] == "hidden folder"
    assert reasons["results"] == "the output folder of this run"
    assert reasons["gone.png"].startswith("broken symbolic link")
    summary = "\n".join(found.skipped_summary())
    assert "gone.png" in summary and "1 file without an image extension" in summary


def test_second_run_inside_the_input_folder_scores_only_the_inputs(tmp_path):
    root = tmp_path / "in"
    _images(root, 2)
    os.symlink(tmp_path / "missing.png", root / "gone.png")
    first = runner.invoke(app, ["predict", str(root), "--out", str(root / "out1"), *TINY])
    assert first.exit_code == 0 and "gone.png: broken symbolic link" in _said(first)
    second = runner.invoke(app, ["predict", str(root), "--out", str(root / "out2"), *TINY])
    assert second.exit_code == 0, second.output
    assert "out1: a folder of zsad results" in _said(second)
    assert len(_rows(root / "out2")) == 2


# ------------------------------------------------------------------ 10: joinable names


def test_csv_names_the_overlay_and_map_built_from_the_path_as_given(tmp_path):
    real = _images(tmp_path / "deep" / "store", 1)[0]
    (tmp_path / "mine").mkdir()
    os.symlink(real, tmp_path / "mine" / "scan.png")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", str(tmp_path / "mine" / "scan.png"), str(_images(tmp_path / "mine", 1)[0]), "--out", str(out), *TINY]
    )
    assert result.exit_code == 0, result.output
    rows = {Path(row["path"]).name: row for row in _rows(out)}
    assert rows["scan.png"]["overlay"] == "overlays/scan.png" and rows["scan.png"]["map"] == "maps/scan.png"
    assert rows["scan.png"]["path"] == str(tmp_path / "mine" / "scan.png")
    for row in rows.values():
        assert (out / row["overlay"]).is_file() and (out / row["map"]).is_file()


# ------------------------------------------------------------------ 13: progress in images


def test_progress_counts_images_not_batches(tmp_path):
    _images(tmp_path / "images", 5)
    args = ["predict", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--batch-size", "2"]
    result = runner.invoke(app, args + [a for a in TINY if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert "5/5" in _said(result) and "3/3" not in _said(result)


def test_evaluation_progress_counts_images_too(tmp_path):
    from zsad.data.synth import generate_mvtec_like

    generate_mvtec_like(tmp_path / "mvtec", categories=["checker"], size=64, n_train=1, n_good=3, n_defect_per_kind=1)
    args = ["test", "--data", f"mvtec:{tmp_path / 'mvtec'}", "--out", str(tmp_path / "eval"), "--batch-size", "2"]
    result = runner.invoke(app, args + [a for a in TINY if a != "--quiet"])
    assert result.exit_code == 0, result.output
    n_images = len(list((tmp_path / "mvtec" / "checker" / "test").rglob("*.png")))
    assert f"{n_images}/{n_images}" in _said(result) and "img" in _said(result)


# ------------------------------------------------------------------ 4: output folders that cannot be used


@pytest.mark.parametrize("case", ["is a file", "under a file", "read-only"])
def test_unusable_output_folders_are_named_with_what_to_do(tmp_path, monkeypatch, case):
    import errno

    _images(tmp_path / "images", 1)
    (tmp_path / "taken").write_text("a file")
    out = {"is a file": tmp_path / "taken", "under a file": tmp_path / "taken" / "out", "read-only": tmp_path / "ro"}[case]
    if case == "read-only":
        def read_only(self, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(self))

        monkeypatch.setattr(Path, "mkdir", read_only)
    result = runner.invoke(app, ["predict", str(tmp_path / "images"), "--out", str(out), *TINY])
    assert result.exit_code == 1 and "Traceback" not in result.output
    expected = {
        "is a file": f"--out {out} is a file, not a folder",
        "under a file": f"--out {out} lies under {tmp_path / 'taken'}, which is a file",
        "read-only": f"cannot write into the output folder {out} (the file system is read-only)",
    }[case]
    assert expected in _said(result)


def test_a_device_zsad_cannot_use_is_refused_clearly_by_the_library_too():
    from zsad.engine.runtime import resolve_device

    with pytest.raises(ValueError, match="--device tpu is not a device zsad can use"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="zsad runs on cpu, cuda"):
        resolve_device("meta")
