"""Issue 18 §7: what the commands print reads right: counts in the singular where there is
one ("1 image"), report tables that fit 80 columns without cutting cells ("Im…"), and an
interrupted `zsad train` that says how to continue."""
from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from zsad.cli import app
from zsad.cli.tables import column_groups, print_markdown
from zsad.data.synth import generate_mvtec_like
from zsad.plurals import counted
from zsad.reports import comparison_markdown, metrics_markdown

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]


def test_counted_uses_the_singular_for_one_only():
    assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"


def test_column_groups_repeat_the_first_column_and_fit_the_width():
    widths = [10, 12, 12, 12, 12, 12, 12, 30]
    groups = column_groups(widths, 60)
    assert all(group[0] == 0 for group in groups)
    assert sorted(index for group in groups for index in group[1:]) == list(range(1, len(widths)))
    for group in groups:
        assert sum(widths[i] + 3 for i in group) + 1 <= 60 or len(group) == 2


def _printed(markdown: str, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_markdown(console, markdown)
    return console.file.getvalue()


def _wide_metrics_report() -> dict:
    metrics = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro")
    per_class = {
        name: {"n_images": 12, "n_anomalous": 7, **{m: 0.1 * (i + 1) for i, m in enumerate(metrics)}} for name in ("bottle", "metal_nut")
    }
    return {"dataset": "mvtec", "method": "moeclip", "weights": "random", "per_class": per_class}


@pytest.mark.parametrize("which", ["metrics", "comparison"])
def test_report_tables_fit_80_columns_without_cut_cells(which):
    if which == "metrics":
        markdown = metrics_markdown(_wide_metrics_report())
        expected = ["bottle", "metal_nut", "AUPRO", "70.0", "mean"]
    else:
        metrics = ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]
        ours = {"mvtec": {m: 0.5 for m in metrics}, "kvasir": {"pixel_auroc": 0.4}}
        markdown = comparison_markdown(ours, {"mvtec": {m: 0.9 for m in metrics}}, metrics, "MoECLIP vs paper")
        expected = ["mvtec", "kvasir", "50.0", "90.0", "-40.0", "AUPRO"]
    text = _printed(markdown)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in expected:
        assert word in text, word


def test_zsad_test_prints_whole_cells_at_80_columns(tmp_path):
    generate_mvtec_like(tmp_path / "data", categories=["disc"], n_train=0, n_good=2, n_defect_per_kind=1, size=32)
    result = runner.invoke(
        app, ["test", "--data", f"mvtec:{tmp_path / 'data'}", "--out", str(tmp_path / "out"), *TINY], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and "AUROC" in result.stdout and "disc" in result.stdout


def test_one_image_and_one_class_are_singular(tmp_path):
    generate_mvtec_like(tmp_path / "data", categories=["disc"], n_train=0, n_good=1, n_defect_per_kind=1, size=32)
    info = runner.invoke(app, ["data", "info", f"mvtec:{tmp_path / 'data'}"])
    assert info.exit_code == 0 and ", 1 class" in info.stdout, info.output
    image = next((tmp_path / "data" / "disc" / "test" / "good").iterdir())
    scored = runner.invoke(app, ["predict", str(image), "--out", str(tmp_path / "out"), *TINY])
    assert scored.exit_code == 0 and "1 image scored" in scored.stdout, scored.output


def test_an_interrupted_train_says_how_to_resume(tmp_path, monkeypatch):
    import zsad.engine.training
    from zsad.engine.run_folder import epoch_checkpoint_path, train_state_path

    out = tmp_path / "run"

    def interrupted_after_two_epochs(*args, **kwargs):
        for epoch in (1, 2):
            checkpoint = epoch_checkpoint_path(out, epoch)
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_bytes(b"")
            train_state_path(checkpoint).write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(zsad.engine.training, "fit", interrupted_after_two_epochs)
    generate_mvtec_like(tmp_path / "data", categories=["disc"], n_train=0, n_good=1, n_defect_per_kind=1, size=32)
    result = runner.invoke(app, ["train", "--method", "moeclip", "--data", f"mvtec:{tmp_path / 'data'}", "--out", str(out), *TINY])
    assert result.exit_code == 130, result.output
    said = " ".join(result.stderr.split())
    assert "2 epochs complete" in said and "(the last: 2)" in said
    assert f"zsad train --out {out} --resume" in said
