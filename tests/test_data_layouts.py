"""zsad.data: every layout behind ``kind:PATH``, flags, splits, classes, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_factories import (
    FIXTURES,
    SHARED_DATA,
    make_btad_tree,
    make_folder_tree,
    make_manifest,
    make_mvtec_like_tree,
    needs_full_set,
    save,
    square_image,
    square_mask,
    write_text_file,
    write_truncated,
)
from torch.utils.data import DataLoader

from zsad.data import (
    DATASET_KINDS,
    AnomalyDataset,
    DataLayoutError,
    Sample,
    build_dataset,
    collate,
    find_duplicate_files,
    parse_data_spec,
)
from zsad.data.synth import generate_mvtec_like, generate_visa_like

SIZE = 32


def labels(dataset: AnomalyDataset) -> list[int | None]:
    return [s.label for s in dataset.samples]


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, ["carpet", "disc"], n_train=2, n_good=2, n_defect_per_kind=1, size=48)
    return root


# --- spec parsing -----------------------------------------------------------------------


def test_dataset_kinds_cover_the_protocol_table():
    expected = {"mvtec", "visa", "btad", "mpdd", "dtd", "rsdd", "ksdd2", "kvasir", "clinicdb",
                "headct", "brainmri", "br35h", "folder", "manifest",
                "ksdd", "dagm", "bmad-brainmri", "bmad-liverct", "bmad-retinaoct", "colondb", "cvc300", "endo",
                "isic"}  # fmt: skip
    assert expected <= set(DATASET_KINDS)  # test_new_layouts covers the kinds of issue 17


def test_parse_data_spec(tmp_path):
    assert parse_data_spec(f"MVTec:{tmp_path}") == ("mvtec", tmp_path)
    with pytest.raises(ValueError, match="kinds: mvtec, visa"):
        parse_data_spec("nonsense:/x")
    with pytest.raises(ValueError, match="KIND:PATH"):
        parse_data_spec("/just/a/path")


# --- MVTec-like -------------------------------------------------------------------------


def test_mvtec_test_split_labels_masks_and_flags(mvtec_root):
    dataset = build_dataset(f"mvtec:{mvtec_root}", image_size=SIZE)
    assert dataset.classes == ["carpet", "disc"]
    assert len(dataset) == 2 * (2 + 4)
    assert dataset.has_masks and dataset.has_image_labels
    for sample in dataset.samples:
        if sample.label == 0:
            assert sample.mask_path is None and sample.image_path.parent.name == "good"
        else:
            assert sample.mask_path.name == sample.image_path.stem + "_mask.png"
            assert sample.mask_path.parent.name == sample.image_path.parent.name


def test_mvtec_items_have_the_contract_shapes(mvtec_root):
    dataset = build_dataset(f"mvtec:{mvtec_root}", classes=["disc"], image_size=SIZE)
    defect = dataset[[s.label for s in dataset.samples].index(1)]
    normal = dataset[[s.label for s in dataset.samples].index(0)]
    assert defect["image"].shape == (3, SIZE, SIZE) and defect["image"].dtype == torch.float32
    assert defect["mask"].shape == (1, SIZE, SIZE) and defect["mask"].sum() > 0
    assert set(defect["mask"].unique().tolist()) <= {0.0, 1.0}
    assert normal["mask"].sum() == 0 and normal["has_mask"] is True
    assert defect["label"] == 1 and normal["label"] == 0 and defect["class_name"] == "disc"
    assert defect["original_size"].tolist() == [48, 48] and defect["error"] == ""


def test_mvtec_train_and_all_splits(mvtec_root):
    train = build_dataset(f"mvtec:{mvtec_root}", split="train", image_size=SIZE)
    assert len(train) == 4 and set(labels(train)) == {0}
    assert all(s.image_path.parent.parent.name == "train" for s in train.samples)
    assert not train.has_image_labels
    everything = build_dataset(f"mvtec:{mvtec_root}", split="all", image_size=SIZE)
    assert len(everything) == 12 + 4
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset(f"mvtec:{mvtec_root}", split="val")


def test_a_single_category_folder_is_accepted(mvtec_root):
    dataset = build_dataset(f"mvtec:{mvtec_root / 'disc'}", image_size=SIZE)
    assert dataset.classes == ["disc"] and len(dataset) == 6


def test_class_selection(mvtec_root):
    dataset = build_dataset(f"mvtec:{mvtec_root}", classes=["carpet"], image_size=SIZE)
    assert dataset.classes == ["carpet"]
    with pytest.raises(ValueError, match=r"available: \['carpet', 'disc'\]"):
        build_dataset(f"mvtec:{mvtec_root}", classes=["bottle"])
    disc = build_dataset(f"mvtec:{mvtec_root}", classes=["disc"], image_size=SIZE)
    assert disc.classes == ["disc"] and len(disc) == 6 and disc.has_masks and disc.kind == "mvtec"


def test_btad_matches_masks_across_extensions(tmp_path):
    counts = make_btad_tree(tmp_path)
    dataset = build_dataset(f"btad:{tmp_path}", image_size=SIZE)
    assert dataset.classes == ["01", "02"]
    assert labels(dataset).count(0) == counts["normal"] and labels(dataset).count(1) == counts["anomalous"]
    suffixes = {(s.image_path.suffix, s.mask_path.suffix) for s in dataset.samples if s.label == 1}
    assert suffixes == {(".bmp", ".png"), (".png", ".bmp")}
    assert all(item["mask"].sum() > 0 for item in (dataset[i] for i in range(len(dataset))) if item["label"] == 1)
    assert len(build_dataset(f"btad:{tmp_path}", split="train")) == counts["train"]


@pytest.mark.parametrize("kind", ["mpdd", "dtd", "rsdd", "ksdd2"])
@pytest.mark.parametrize("mask_suffix", ["", "_mask", "_GT"])
def test_mvtec_like_kinds_accept_mask_names_with_or_without_suffix(tmp_path, kind, mask_suffix):
    make_mvtec_like_tree(tmp_path, mask_suffix)
    dataset = build_dataset(f"{kind}:{tmp_path}", image_size=SIZE)
    assert dataset.kind == kind and dataset.classes == ["part"]
    mask_names = [s.mask_path.name for s in dataset.samples if s.label == 1]
    assert mask_names == [f"000{mask_suffix}.png", f"001{mask_suffix}.png"]


def test_defect_without_mask_file_is_a_clear_error(tmp_path):
    make_mvtec_like_tree(tmp_path, "_mask")
    (tmp_path / "part" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(DataLayoutError, match="1 anomalous images have no mask.*001.png"):
        build_dataset(f"mvtec:{tmp_path}")


# --- VisA -------------------------------------------------------------------------------


def test_visa_with_split_csv(tmp_path):
    generate_visa_like(tmp_path, ["tile"], n_train=3, n_good=2, n_defect_per_kind=1, size=40)
    test = build_dataset(f"visa:{tmp_path}", image_size=SIZE)
    assert test.classes == ["tile"] and labels(test).count(0) == 2 and labels(test).count(1) == 4
    assert all((s.mask_path is not None) == (s.label == 1) for s in test.samples)
    assert test[labels(test).index(1)]["mask"].sum() > 0
    train = build_dataset(f"visa:{tmp_path}", split="train")
    assert len(train) == 3 and set(labels(train)) == {0}


def test_visa_csv_with_a_bad_label_names_the_line(tmp_path):
    generate_visa_like(tmp_path, ["tile"], n_train=1, n_good=1, n_defect_per_kind=1, size=40)
    csv_path = tmp_path / "split_csv" / "1cls.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].replace(",normal,", ",broken,")
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=r"1cls.csv:3: label 'broken'"):
        build_dataset(f"visa:{tmp_path}")


def test_visa_without_csv_falls_back_to_folders(tmp_path):
    generate_visa_like(tmp_path, ["tile", "ring"], n_train=1, n_good=1, n_defect_per_kind=1, size=40)
    (tmp_path / "split_csv" / "1cls.csv").unlink()
    dataset = build_dataset(f"visa:{tmp_path}", image_size=SIZE)
    assert dataset.classes == ["ring", "tile"]
    assert labels(dataset).count(0) == 4 and labels(dataset).count(1) == 8
    assert all(s.mask_path.suffix == ".png" for s in dataset.samples if s.label == 1)
    with pytest.raises(DataLayoutError, match="no train split"):
        build_dataset(f"visa:{tmp_path}", split="train")
    assert len(build_dataset(f"visa:{tmp_path}", split="all")) == len(dataset)


# --- folder and manifest ----------------------------------------------------------------


def test_folder_layout_with_masks(tmp_path):
    root = tmp_path / "widgets"
    make_folder_tree(root)
    dataset = build_dataset(f"folder:{root}", image_size=SIZE)
    assert dataset.classes == ["widgets"] and dataset.has_masks and dataset.has_image_labels
    assert labels(dataset) == [0, 0, 0, 1, 1]
    assert [s.mask_path.name for s in dataset.samples if s.label == 1] == ["a0_mask.png", "a1_mask.png"]


def test_folder_layout_good_anomaly_without_masks(tmp_path):
    root = tmp_path / "parts"
    make_folder_tree(root, normal="good", abnormal="anomaly", masks=False)
    dataset = build_dataset(f"folder:{root}", image_size=SIZE)
    assert not dataset.has_masks and labels(dataset).count(1) == 2
    assert dataset[4]["has_mask"] is False and dataset[4]["mask"].sum() == 0


def test_manifest_resolves_relative_paths_and_defaults_the_class(tmp_path):
    save(square_image(), tmp_path / "imgs" / "a.png")
    save(square_mask(), tmp_path / "imgs" / "a_mask.png")
    save(square_image(), tmp_path / "imgs" / "b.png")
    manifest = make_manifest(tmp_path, [
        {"image_path": "imgs/a.png", "label": 1, "mask_path": "imgs/a_mask.png", "class_name": "screw"},
        {"image_path": str(tmp_path / "imgs" / "b.png"), "label": 0},
        {"image_path": "imgs/b.png", "label": None},
    ])  # fmt: skip
    dataset = build_dataset(f"manifest:{manifest}", image_size=SIZE)
    assert [s.class_name for s in dataset.samples] == ["screw", "object", "object"]
    assert dataset.samples[0].mask_path == tmp_path / "imgs" / "a_mask.png"
    assert dataset.has_masks and dataset.has_image_labels
    assert dataset[2]["label"] == -1 and dataset[0]["mask"].sum() > 0


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"image_path": "a.png", "label": 2}', "label must be 0, 1 or null"),
        ('{"image_path": "a.png", "label": true}', "label must be 0, 1 or null"),
        ('{"image_path": "a.png", "lable": 1}', "unknown keys"),
        ('{"image_path": "missing.png", "label": 1}', "does not exist"),
        ('{"label": 1}', "'image_path' and 'label' are required"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_manifest_bad_line_reports_its_line_number(tmp_path, bad_line, message):
    save(square_image(), tmp_path / "a.png")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"image_path": "a.png", "label": 0}\n\n' + bad_line + "\n")
    with pytest.raises(DataLayoutError, match=rf"list.jsonl:3: .*{message}"):
        build_dataset(f"manifest:{manifest}")


# --- empty and broken input -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mvtec", "btad", "visa", "kvasir", "clinicdb", "headct", "brainmri", "folder"])
def test_empty_folder_is_a_clear_error_naming_path_and_layout(tmp_path, kind):
    with pytest.raises(DataLayoutError) as caught:
        build_dataset(f"{kind}:{tmp_path}")
    assert str(tmp_path) in str(caught.value) and "expected" in str(caught.value)


def test_category_folders_without_images_are_a_clear_error(tmp_path):
    (tmp_path / "part" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match="no images found.*expected layout"):
        build_dataset(f"mvtec:{tmp_path}")


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataLayoutError, match="folder not found"):
        build_dataset(f"mvtec:{tmp_path / 'absent'}")


def test_bad_files_become_item_errors_and_the_loader_survives(tmp_path):
    root = tmp_path / "mixed"
    make_folder_tree(root)
    write_truncated(root / "normal" / "n3.png", "PNG")
    write_text_file(root / "normal" / "n4.png")
    save(np.zeros((5, 7), dtype=np.uint8), root / "masks" / "a1_mask.png")  # wrong size
    dataset = build_dataset(f"folder:{root}", image_size=SIZE)
    batches = list(DataLoader(dataset, batch_size=3, collate_fn=collate))
    assert sum(batch.size for batch in batches) == 7
    by_name = {path.split("/")[-1]: "" for batch in batches for path in batch.paths}
    by_name.update({path.split("/")[-1]: error for batch in batches for path, error in batch.unreadable})
    assert len(by_name) == 7
    assert by_name["n0.png"] == "" and by_name["a0.jpg"] == ""
    assert "truncated" in by_name["n3.png"] and "cannot decode" in by_name["n4.png"]
    assert "a1_mask.png" in by_name["a1.jpg"] and "a1.jpg" in by_name["a1.jpg"] and "7x5" in by_name["a1.jpg"]
    bad = dataset[[s.image_path.name for s in dataset.samples].index("n4.png")]
    assert bad["image"].abs().sum() == 0 and bad["has_mask"] is False and bad["original_size"].tolist() == [0, 0]


def test_collate_gives_a_typed_batch(mvtec_root):
    dataset = build_dataset(f"mvtec:{mvtec_root}", classes=["disc"], image_size=SIZE)
    normal_index = labels(dataset).index(0)
    batch = collate([dataset[normal_index], dataset[labels(dataset).index(1)]])
    assert batch.images.shape == (2, 3, SIZE, SIZE) and batch.masks.shape == (2, 1, SIZE, SIZE)
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [0, 1]
    assert batch.has_mask.dtype == torch.bool and batch.original_sizes.shape == (2, 2)
    assert isinstance(batch.paths, list) and batch.class_names == ["disc", "disc"] and batch.unreadable == []
    with pytest.raises(ValueError):
        collate([])


def test_has_image_labels_needs_both_labels(tmp_path):
    samples = [Sample(tmp_path / "a.png", 1, None, "x")]
    assert not AnomalyDataset("folder", tmp_path, samples, has_masks=False).has_image_labels
    samples.append(Sample(tmp_path / "b.png", 0, None, "x"))
    assert AnomalyDataset("folder", tmp_path, samples, has_masks=False).has_image_labels


def test_find_duplicate_files(tmp_path):
    for name, content in [("a", b"same"), ("b", b"same"), ("c", b"diff"), ("d", b"same"), ("e", b"other!")]:
        (tmp_path / name).write_bytes(content)
    groups = find_duplicate_files(sorted(tmp_path.iterdir()))
    assert [[p.name for p in group] for group in groups] == [["a", "b", "d"]]


# --- real data: the repository's fixtures (always), the full sets (when present) ----------


def test_kvasir_fixture_all_anomalous_with_masks():
    dataset = build_dataset(f"kvasir:{FIXTURES / 'kvasir-seg'}", image_size=SIZE)
    assert len(dataset) == 2 and dataset.classes == ["kvasir"]
    assert dataset.has_masks and not dataset.has_image_labels
    for index in range(2):
        item = dataset[index]
        assert item["error"] == "" and item["has_mask"] and 0 < item["mask"].mean() < 1


@needs_full_set("kvasir-seg")
def test_kvasir_full_set_counts():
    dataset = build_dataset(f"kvasir:{SHARED_DATA / 'kvasir-seg'}", image_size=SIZE)
    assert len(dataset) == 1000 and dataset.classes == ["kvasir"]
    for index in (0, 500, 999):
        item = dataset[index]
        assert item["error"] == "" and item["has_mask"] and 0 < item["mask"].mean() < 1


def test_headct_fixture_labels_csv_with_spaced_header():
    assert (FIXTURES / "headct" / "labels.csv").read_text().splitlines()[0] == "id, hemorrhage"
    dataset = build_dataset(f"headct:{FIXTURES / 'headct'}", image_size=SIZE)
    assert [s.image_path.name for s in dataset.samples] == ["060.png", "192.png", "198.png"]
    assert labels(dataset) == [1, 0, 0]
    assert not dataset.has_masks and dataset.has_image_labels
    item = dataset[0]
    assert item["error"] == "" and item["has_mask"] is False


@needs_full_set("headct")
def test_headct_full_set_counts():
    dataset = build_dataset(f"headct:{SHARED_DATA / 'headct'}", image_size=SIZE)
    assert labels(dataset).count(0) == 100 and labels(dataset).count(1) == 100
    assert dataset.samples[0].image_path.name == "000.png" and dataset.samples[199].image_path.name == "199.png"


def test_brainmri_fixture_yes_no_folders_and_spaced_names():
    dataset = build_dataset(f"brainmri:{FIXTURES / 'brainmri'}", image_size=SIZE)
    assert labels(dataset).count(1) == 2 and labels(dataset).count(0) == 4
    assert dataset.classes == ["brainmri"] and not dataset.has_masks
    assert {"11 no.jpg", "no 98.jpg"} <= {s.image_path.name for s in dataset.samples}
    assert all(dataset[index]["error"] == "" for index in range(len(dataset)))


@needs_full_set("brainmri")
def test_brainmri_full_set_counts_and_duplicates():
    dataset = build_dataset(f"brainmri:{SHARED_DATA / 'brainmri'}", image_size=SIZE)
    assert labels(dataset).count(1) == 155 and labels(dataset).count(0) == 98
    assert dataset.classes == ["brainmri"] and not dataset.has_masks
    suffixes = {s.image_path.suffix for s in dataset.samples}
    assert {".jpg", ".JPG", ".jpeg", ".png"} <= suffixes
    groups = find_duplicate_files(s.image_path for s in dataset.samples)
    assert groups and all(len(group) >= 2 for group in groups)  # duplicates are kept, and can be reported
    assert len({s.image_path for s in dataset.samples}) == len(dataset)


def test_clinicdb_fixture_tiff_pairs_in_numeric_order():
    dataset = build_dataset(f"clinicdb:{FIXTURES / 'cvc-clinicdb'}", image_size=SIZE)
    assert len(dataset) == 2 and dataset.has_masks and not dataset.has_image_labels
    assert [s.image_path.stem for s in dataset.samples] == ["57", "123"]  # numeric, not "123" < "57"
    item = dataset[0]
    assert item["error"] == "" and item["original_size"].tolist() == [288, 384] and item["mask"].sum() > 0
