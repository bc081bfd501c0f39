"""`zsad predict`, `zsad test`, `zsad demo` and the quality of `--help`."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import typer
from data_factories import FIXTURES
from PIL import Image
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.viz import load_map_png16

runner = CliRunner()
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def mvtec_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["checker", "tile"], size=64, n_train=1, n_good=2, n_defect_per_kind=1)
    return root


def _mixed_folder(root, mvtec_tree):
    (root / "nested").mkdir(parents=True)
    Image.open(mvtec_tree / "checker" / "test" / "good" / "000.png").save(root / "good.png")
    Image.open(mvtec_tree / "tile" / "test" / "hole" / "000.png").convert("L").save(root / "nested" / "gray.jpg")
    (root / "broken.png").write_text("not an image")
    data = (mvtec_tree / "tile" / "test" / "cut" / "000.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("ignored: not an image extension")


def test_predict_on_a_folder_mixing_good_and_broken_files(tmp_path, mvtec_tree):
    images = tmp_path / "images"
    _mixed_folder(images, mvtec_tree)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(images), "--out", str(out), "--threshold", "0.4", "--num-workers", "2", *TINY])
    assert result.exit_code == 2, result.output
    rows = list(csv.DictReader((out / "scores.csv").open()))
    by_name = {row["path"].split("/")[-1]: row for row in rows}
    assert set(by_name) == {"good.png", "gray.jpg", "broken.png", "truncated.png"}
    assert by_name["broken.png"]["error"] and by_name["broken.png"]["score"] == ""
    assert by_name["truncated.png"]["error"]
    for name in ("good.png", "gray.jpg"):
        row = by_name[name]
        assert row["error"] == ""
        assert row["label"] == str(int(float(row["score"]) >= 0.4))
    raw = load_map_png16(out / "maps" / "nested__gray.png")
    assert raw.shape == (64, 64) and 0 <= raw.min() and raw.max() <= 1
    overlay = Image.open(out / "overlays" / "good.png")
    assert overlay.width > 64 and overlay.height > 64  # the 64 x 64 image plus caption and colour bar
    assert {row["weights"] for row in rows} == {"random:0"}  # provenance in every file
    assert overlay.text["zsad:weights"] == "random:0"
    assert Image.open(out / "maps" / "good.png").text["zsad:method"] == "zeroshot"
    meta = json.loads((out / "scores.json").read_text())["meta"]
    assert meta["weights"] == "random:0" and meta["pipeline_check"] is True and meta["threshold"] == 0.4
    # Nothing is overwritten without --overwrite, and what exists stays intact.
    before = (out / "scores.csv").read_bytes()
    again = runner.invoke(app, ["predict", str(images), "--out", str(out), *TINY])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert (out / "scores.csv").read_bytes() == before
    assert runner.invoke(app, ["predict", str(images), "--out", str(out), "--overwrite", *TINY]).exit_code == 2


def test_predict_with_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *TINY])
    assert result.exit_code == 1 and "no image files" in result.output
    missing = runner.invoke(app, ["predict", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *TINY])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_test_writes_metrics_json_and_markdown(tmp_path, mvtec_tree):
    out = tmp_path / "test"
    result = runner.invoke(app, ["test", "--data", f"mvtec:{mvtec_tree}", "--out", str(out), "--save-maps", "1", *TINY])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert {"method", "backbone", "weights", "dataset", "per_class", "mean"} <= set(report)
    assert report["method"] == "zeroshot" and report["weights"] == "random:0"
    assert set(report["per_class"]) == {"checker", "tile"}
    checker = report["per_class"]["checker"]
    assert checker["n_images"] == 6 and checker["n_anomalous"] == 4
    for metric in ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"):
        assert 0.0 <= checker[metric] <= 1.0
        expected_mean = np.mean([report["per_class"][c][metric] for c in ("checker", "tile")])
        assert abs(report["mean"][metric] - expected_mean) < 1e-12
    markdown = (out / "metrics.md").read_text()
    assert "pipeline check" in markdown and "| checker |" in markdown
    assert len(list((out / "maps").rglob("*.png"))) == 2
    only_tile = runner.invoke(app, ["test", "--data", f"mvtec:{mvtec_tree}", "--classes", "tile", "--out", str(tmp_path / "t2"), *TINY])
    assert only_tile.exit_code == 0
    assert set(json.loads((tmp_path / "t2" / "metrics.json").read_text())["per_class"]) == {"tile"}


def test_test_reports_unreadable_images_and_goes_on(tmp_path, mvtec_tree):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(mvtec_tree / "tile", tree / "tile")
    (tree / "tile" / "test" / "good" / "001.png").write_text("corrupt")
    out = tmp_path / "out"
    result = runner.invoke(app, ["test", "--data", f"mvtec:{tree}", "--out", str(out), *TINY])
    assert result.exit_code == 2
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_errors"] == 1 and report["errors"][0]["path"].endswith("001.png")
    assert report["per_class"]["tile"]["n_images"] == 5


def test_demo_runs_offline_end_to_end(tmp_path):
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--image-size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "pipeline check" in result.output.lower()
    assert (tmp_path / "demo" / "zeroshot" / "metrics.json").is_file()
    assert (tmp_path / "demo" / "moeclip" / "train" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "demo" / "moeclip" / "test" / "metrics.json").read_text())["method"] == "moeclip"
    assert any((tmp_path / "demo" / "predict" / "overlays").iterdir())


def _all_commands(group, prefix=""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click classes)
            yield from _all_commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_and_option_is_explained():
    root = typer.main.get_command(app)
    commands = dict(_all_commands(root))
    assert {"predict", "test", "demo", "data synth"} <= set(commands)
    for name, command in commands.items():
        assert command.help, name
        for parameter in command.params:
            if parameter.param_type_name == "option":
                assert parameter.help, f"zsad {name} {parameter.opts[0]} has no help text"
    assert runner.invoke(app, ["predict", "--help"]).exit_code == 0


def _layout(kind, root, mvtec_tree):
    """Build a small tree of `kind` under root; return the --data spec."""
    from data_factories import make_btad_tree, make_folder_tree, make_manifest, make_mvtec_like_tree

    from zsad.data.synth import generate_visa_like

    if kind == "visa":
        generate_visa_like(root, categories=["tile"], size=64, n_good=2, n_defect_per_kind=1)
    elif kind == "btad":
        make_btad_tree(root)
    elif kind in ("mpdd", "dtd", "rsdd", "ksdd2"):
        make_mvtec_like_tree(root, mask_suffix="_mask" if kind != "ksdd2" else "")
    elif kind == "folder":
        make_folder_tree(root)
    elif kind == "manifest":
        images = sorted((mvtec_tree / "tile" / "test").rglob("*.png"))
        records = [
            {
                "image_path": str(p),
                "label": int(p.parent.name != "good"),
                "class_name": "tile",
                **(
                    {"mask_path": str(mvtec_tree / "tile" / "ground_truth" / p.parent.name / f"{p.stem}_mask.png")}
                    if p.parent.name != "good"
                    else {}
                ),
            }
            for p in images
        ]
        return f"manifest:{make_manifest(root, records)}"
    return f"{kind}:{root}"


@pytest.mark.parametrize("kind", ["visa", "btad", "mpdd", "dtd", "rsdd", "ksdd2", "folder", "manifest"])
def test_zeroshot_test_runs_on_every_generated_layout(tmp_path, mvtec_tree, kind):
    spec = _layout(kind, tmp_path / kind, mvtec_tree)
    out = tmp_path / "out"
    result = runner.invoke(app, ["test", "--method", "zeroshot", "--data", spec, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    mean = json.loads((out / "metrics.json").read_text())["mean"]
    assert mean["pixel_auroc"] is not None and mean["image_auroc"] is not None


@pytest.mark.parametrize("kind, folder, has_pixels, has_images", [
    ("headct", "headct", False, True),
    ("brainmri", "brainmri", False, True),
    ("clinicdb", "cvc-clinicdb", True, False),
])
def test_zeroshot_test_runs_on_the_real_medical_sets(tmp_path, kind, folder, has_pixels, has_images):
    out = tmp_path / "out"
    result = runner.invoke(app, ["test", "--data", f"{kind}:{FIXTURES / folder}", "--out", str(out), "--batch-size", "32", *TINY])
    assert result.exit_code == 0, result.output
    mean = json.loads((out / "metrics.json").read_text())["mean"]
    assert (mean["pixel_auroc"] is not None) == has_pixels
    assert (mean["image_auroc"] is not None) == has_images


def test_test_and_predict_accept_moeclip_checkpoints(tmp_path, mvtec_tree):
    import warnings

    import torch

    from zsad.api import build_detector, full_config
    from zsad.checkpoints import save_checkpoint
    from zsad.engine.run_folder import epoch_checkpoint_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64)
    with torch.no_grad():
        model.moe_layers[0].experts.lora_b.normal_()
    run = tmp_path / "run"
    save_checkpoint(run / "model.safetensors", model.trainable_state_dict(), full_config(model))
    save_checkpoint(epoch_checkpoint_path(run, 1), model.trainable_state_dict(), full_config(model))
    device = ["--device", "cpu", "--quiet"]
    tested = runner.invoke(app, ["test", "--checkpoint", str(run), "--data", f"mvtec:{mvtec_tree}", "--out", str(tmp_path / "t"), *device])
    assert tested.exit_code == 0, tested.output
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["method"] == "moeclip"
    image = mvtec_tree / "tile" / "test" / "good" / "000.png"
    predicted = runner.invoke(
        app, ["predict", str(image), "--checkpoint", str(epoch_checkpoint_path(run, 1)), "--out", str(tmp_path / "p"), *device]
    )
    assert predicted.exit_code == 0, predicted.output
    assert json.loads((tmp_path / "p" / "scores.json").read_text())["meta"]["method"] == "moeclip"
    mismatch = runner.invoke(
        app,
        ["test", "--checkpoint", str(run), "--image-size", "96", "--data", f"mvtec:{mvtec_tree}", "--out", str(tmp_path / "m"), *device],
    )
    assert mismatch.exit_code == 1 and "image_size: requested 96, the checkpoint has 64" in mismatch.output
