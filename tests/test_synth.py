"""zsad.data.synth and ``zsad data`` CLI: exact layouts, exact masks, determinism, speed."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import typer.main
from data_factories import file_info, load_array
from typer.testing import CliRunner

from zsad.cli import app
from zsad.data import build_dataset
from zsad.data.synth import (
    CATEGORIES,
    DEFECT_KINDS,
    OBJECT_CATEGORIES,
    TEST_CATEGORIES,
    TEXTURE_CATEGORIES,
    TRAIN_CATEGORIES,
    add_defect,
    category_rng,
    generate_mvtec_like,
    generate_visa_like,
    render_normal,
)


def test_category_groups_are_disjoint_and_cover_textures_and_objects():
    assert not set(TRAIN_CATEGORIES) & set(TEST_CATEGORIES)
    assert set(TRAIN_CATEGORIES) | set(TEST_CATEGORIES) == set(CATEGORIES)
    for group in (TRAIN_CATEGORIES, TEST_CATEGORIES):
        assert set(group) & set(TEXTURE_CATEGORIES) and set(group) & set(OBJECT_CATEGORIES)


def test_mvtec_layout_is_exact(tmp_path):
    written = generate_mvtec_like(tmp_path, ["wood", "ring"], n_train=2, n_good=3, n_defect_per_kind=2, size=64)
    assert written == ["wood", "ring"]
    for category in written:
        root = tmp_path / category
        assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(["good", *DEFECT_KINDS])
        assert sorted(p.name for p in (root / "test" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECT_KINDS)
        for kind in DEFECT_KINDS:
            assert sorted(p.name for p in (root / "test" / kind).iterdir()) == ["000.png", "001.png"]
            masks = sorted(p.name for p in (root / "ground_truth" / kind).iterdir())
            assert masks == ["000_mask.png", "001_mask.png"]
            assert file_info(root / "test" / kind / "000.png") == ("RGB", (64, 64), "PNG")
            mask_path = root / "ground_truth" / kind / "000_mask.png"
            assert file_info(mask_path) == ("L", (64, 64), "PNG")
            assert set(np.unique(load_array(mask_path))) == {0, 255}


@pytest.mark.parametrize("category", CATEGORIES)
def test_mask_is_exactly_the_set_of_changed_pixels(category):
    rng = category_rng(category, seed=5)
    for kind in DEFECT_KINDS:
        normal = render_normal(category, 96, rng)
        image, mask = add_defect(normal, kind, rng)
        changed = (image != normal.image).any(axis=2)
        np.testing.assert_array_equal(changed, mask, err_msg=f"{category}/{kind}")
        assert (mask & ~normal.surface).sum() == 0
        visible = np.abs(image.astype(int) - normal.image.astype(int)).max(axis=2)[mask]
        assert visible.mean() > 30, f"{category}/{kind} defect is too faint"


def test_normal_images_vary_but_stay_in_their_category():
    rng = category_rng("stripes", seed=0)
    first, second = render_normal("stripes", 64, rng).image, render_normal("stripes", 64, rng).image
    assert not np.array_equal(first, second)
    assert first.min() >= 60 and first.max() <= 230


def test_generation_is_deterministic_and_per_category(tmp_path):
    small = dict(n_train=1, n_good=1, n_defect_per_kind=1, size=48)
    generate_mvtec_like(tmp_path / "a", ["disc", "carpet"], seed=3, **small)
    generate_mvtec_like(tmp_path / "b", ["carpet"], seed=3, **small)
    generate_mvtec_like(tmp_path / "c", ["carpet"], seed=4, **small)
    for relative in ("test/hole/000.png", "ground_truth/stain/000_mask.png", "train/good/000.png"):
        a, b = load_array(tmp_path / "a/carpet" / relative), load_array(tmp_path / "b/carpet" / relative)
        np.testing.assert_array_equal(a, b)
    a, c = load_array(tmp_path / "a/carpet/test/hole/000.png"), load_array(tmp_path / "c/carpet/test/hole/000.png")
    assert not np.array_equal(a, c)


def test_unknown_category_and_defect_kind_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic categories"):
        generate_mvtec_like(tmp_path, ["bottle"])
    with pytest.raises(ValueError, match="unknown defect kind"):
        add_defect(render_normal("disc", 32, category_rng("disc", 0)), "crack", category_rng("disc", 0))


def test_visa_layout_and_csv_are_exact(tmp_path):
    generate_visa_like(tmp_path, ["tile"], n_train=2, n_good=1, n_defect_per_kind=1, size=48)
    data = tmp_path / "tile" / "Data"
    assert sorted(p.name for p in (data / "Images" / "Normal").iterdir()) == ["0000.JPG", "0001.JPG", "0002.JPG"]
    anomalies = ["000", "001", "002", "003"]
    assert sorted(p.name for p in (data / "Images" / "Anomaly").iterdir()) == [f"{n}.JPG" for n in anomalies]
    assert sorted(p.name for p in (data / "Masks" / "Anomaly").iterdir()) == [f"{n}.png" for n in anomalies]
    assert file_info(data / "Images" / "Anomaly" / "000.JPG")[2] == "JPEG"
    with (tmp_path / "split_csv" / "1cls.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["object", "split", "label", "image", "mask"]
    assert rows[1] == ["tile", "train", "normal", "tile/Data/Images/Normal/0000.JPG", ""]
    assert rows[3] == ["tile", "test", "normal", "tile/Data/Images/Normal/0002.JPG", ""]
    anomaly_row = ["tile", "test", "anomaly", "tile/Data/Images/Anomaly/000.JPG", "tile/Data/Masks/Anomaly/000.png"]
    assert rows[4] == anomaly_row
    assert len(rows) == 1 + 3 + 4


def test_generated_mvtec_tree_reads_back_with_matching_masks(tmp_path):
    generate_mvtec_like(tmp_path, ["cross"], n_train=1, n_good=1, n_defect_per_kind=1, size=64)
    dataset = build_dataset(f"mvtec:{tmp_path}", image_size=64)
    for index, sample in enumerate(dataset.samples):
        item = dataset[index]
        expected = load_array(sample.mask_path) > 0 if sample.mask_path else np.zeros((64, 64), dtype=bool)
        np.testing.assert_array_equal(item["mask"][0].numpy().astype(bool), expected)


# --- CLI --------------------------------------------------------------------------------


def test_cli_synth_writes_and_refuses_a_non_empty_folder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    args = ["synth", str(out), "--categories", "disc,wood", "--size", "48", "--n-defect", "1"]
    result = runner.invoke(app, ["data", *args])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["disc", "wood"]
    refused = runner.invoke(app, ["data", *args])
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    (out / "disc" / "test" / "hole" / "999.png").write_bytes(b"stale")
    assert runner.invoke(app, ["data", *args, "--overwrite"]).exit_code == 0
    assert not (out / "disc" / "test" / "hole" / "999.png").exists()


def test_cli_synth_visa_layout_and_bad_category(tmp_path):
    runner = CliRunner()
    args = ["synth", str(tmp_path / "v"), "--layout", "visa", "--categories", "ring", "--size", "40"]
    result = runner.invoke(app, ["data", *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "split_csv" / "1cls.csv").is_file()
    bad = runner.invoke(app, ["data", "synth", str(tmp_path / "w"), "--categories", "bottle"])
    assert bad.exit_code != 0 and "bottle" in bad.output


def test_cli_info_counts_classes_and_labels(tmp_path):
    generate_mvtec_like(tmp_path, ["tile"], n_train=1, n_good=2, n_defect_per_kind=1, size=40)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", f"mvtec:{tmp_path}", "--duplicates"])
    assert result.exit_code == 0, result.output
    assert "has_masks=True has_image_labels=True" in result.output
    assert any(line.split() == ["tile", "2", "4", "0"] for line in result.output.splitlines())
    assert "duplicates: 0 groups" in result.output
    missing = runner.invoke(app, ["data", "info", f"mvtec:{tmp_path / 'nothing'}"])
    assert missing.exit_code == 1 and "folder not found" in missing.output


def test_every_cli_option_has_help():
    group = typer.main.get_command(app).commands["data"]
    for name, command in group.commands.items():
        assert command.params
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} lacks help"
