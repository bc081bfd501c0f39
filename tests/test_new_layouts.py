"""MVTec AD 2, Real-IAD, MVTec LOCO and the lineage's metadata files behind ``kind:PATH``:
counts, labels, aligned and merged masks, defect types, splits, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from data_factories import load_array, save
from new_layout_factories import (
    make_aaclip_jsonl,
    make_anomalyclip_meta,
    make_mvtec_ad2_tree,
    make_mvtec_loco_tree,
    make_realiad_tree,
    plain,
)

from zsad.data import DATASET_KINDS, DataLayoutError, build_dataset

SIZE = 32
NEW_KINDS = {"mvtec-ad2", "mvtec-loco", "realiad", "anomalyclip-meta", "aaclip-jsonl"}


def counts(dataset) -> dict:
    labels = [s.label for s in dataset.samples]
    return {"images": len(labels), "normal": labels.count(0), "anomalous": labels.count(1), "unknown": labels.count(None)}


def assert_masks_match_their_images(dataset) -> None:
    """Every anomalous item's mask covers the red square of its own image (intersection
    over union > 0.8; another image's square, shifted, overlaps it far less; JPEG blurs edges)."""
    for index, sample in enumerate(dataset.samples):
        item = dataset[index]
        assert item["error"] == ""
        if sample.label == 1:
            red = load_array(sample.image_path, "RGB")[:, :, 0] > 150
            mask = item["mask"][0].numpy() > 0.5
            assert (mask & red).sum() / (mask | red).sum() > 0.8, sample.image_path


def test_the_new_kinds_are_registered():
    assert NEW_KINDS <= set(DATASET_KINDS)


# --- MVTec AD 2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ad2_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec_ad_2")
    return root, make_mvtec_ad2_tree(root)


def test_mvtec_ad2_public_test_split(ad2_root):
    root, expected = ad2_root
    dataset = build_dataset(f"mvtec-ad2:{root}", image_size=SIZE)
    assert counts(dataset) == {"images": expected["good"] + expected["bad"], "normal": expected["good"],
                               "anomalous": expected["bad"], "unknown": 0}  # fmt: skip
    assert dataset.has_masks and dataset.has_image_labels and dataset.classes == ["can", "vial"]
    for sample in dataset.samples:
        assert (sample.defect_type == "bad") == (sample.label == 1)
        if sample.label == 1:
            assert sample.mask_path.name == sample.image_path.stem + "_mask.png"
            assert sample.mask_path.parent.parts[-3:] == ("test_public", "ground_truth", "bad")
    assert_masks_match_their_images(dataset)


def test_mvtec_ad2_train_validation_and_all(ad2_root):
    root, expected = ad2_root
    train = build_dataset(f"mvtec-ad2:{root}", split="train")
    validation = build_dataset(f"mvtec-ad2:{root}", split="validation")
    assert counts(train)["normal"] == len(train) == expected["train"]
    assert counts(validation)["normal"] == len(validation) == expected["validation"]
    assert all("validation" in s.image_path.parts for s in validation.samples)
    everything = build_dataset(f"mvtec-ad2:{root}", split="all")
    assert len(everything) == expected["train"] + expected["validation"] + expected["good"] + expected["bad"]


@pytest.mark.parametrize("split", ["test_private", "test_private_mixed"])
def test_mvtec_ad2_private_splits_are_unlabelled_and_listed(ad2_root, split):
    root, expected = ad2_root
    dataset = build_dataset(f"mvtec-ad2:{root}", split=split)
    assert counts(dataset)["unknown"] == len(dataset) == expected[split]
    assert not dataset.has_image_labels and all(s.mask_path is None for s in dataset.samples)


def test_mvtec_ad2_only_private_splits_refuse_a_labelled_test(tmp_path):
    make_mvtec_ad2_tree(tmp_path, categories=("rice",))
    shutil.rmtree(tmp_path / "rice" / "test_public")
    with pytest.raises(DataLayoutError, match=r"no labelled test images.*test_private \(3 images\).*predict only"):
        build_dataset(f"mvtec-ad2:{tmp_path}")


def test_mvtec_ad2_one_category_folder_and_bad_input(tmp_path):
    make_mvtec_ad2_tree(tmp_path, categories=("can",))
    assert build_dataset(f"mvtec-ad2:{tmp_path / 'can'}").classes == ["can"]
    with pytest.raises(ValueError, match="unknown split 'test_private'"):
        build_dataset(f"mvtec:{tmp_path}", split="test_private")  # only mvtec-ad2 has it
    (tmp_path / "can" / "test_public" / "ground_truth" / "bad" / "001_overexposed_mask.png").unlink()
    with pytest.raises(DataLayoutError, match="1 anomalous images have no mask file"):
        build_dataset(f"mvtec-ad2:{tmp_path}")
    (tmp_path / "can" / "test_public" / "Bad").mkdir()
    with pytest.raises(DataLayoutError, match=r"unexpected folders \['Bad'\]"):
        build_dataset(f"mvtec-ad2:{tmp_path}")
    with pytest.raises(DataLayoutError, match="no category folder with a train, validation, test_public"):
        build_dataset(f"mvtec-ad2:{tmp_path / 'can' / 'train' / 'good'}")


# --- Real-IAD -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realiad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("Real-IAD")
    return root, make_realiad_tree(root)


@pytest.mark.parametrize("relative", ["", "realiad_256"])
def test_realiad_splits_labels_views_and_defects(realiad_root, relative):
    root, expected = realiad_root
    test = build_dataset(f"realiad:{root / relative}", image_size=SIZE)
    assert counts(test) == {"images": expected["test"], "normal": expected["test"] - expected["anomalous_views"],
                            "anomalous": expected["anomalous_views"], "unknown": 0}  # fmt: skip
    assert len(build_dataset(f"realiad:{root / relative}", split="train")) == expected["train"]
    groups = {s.group for s in test.samples}
    assert groups == {"audiojack/OK/S0003", "audiojack/NG/AK/S0002", "audiojack/NG/BX/S0004"}
    views = sorted(s.image_path.name.split("_C")[1][0] for s in test.samples if s.group == "audiojack/NG/AK/S0002")
    assert views == ["1", "2", "3", "4", "5"]
    assert {s.defect_type for s in test.samples if s.label == 1} == {"AK", "BX"}
    assert all(s.defect_type is None for s in test.samples if s.label == 0)
    for sample in test.samples:
        if sample.label == 1:
            assert sample.mask_path.name == sample.image_path.stem + "_mask.png"
    assert test.has_masks
    assert_masks_match_their_images(test)


def test_realiad_bad_input_is_a_clear_error(tmp_path):
    make_realiad_tree(tmp_path)
    json_file = tmp_path / "realiad_jsons" / "realiad_jsons" / "audiojack.json"
    document = json.loads(json_file.read_text())
    (tmp_path / "realiad_512").mkdir()
    with pytest.raises(DataLayoutError, match="several resolutions.*realiad:.*realiad_256"):
        build_dataset(f"realiad:{tmp_path}")
    root = tmp_path / "realiad_256"
    json_file.write_text(json.dumps({"images": []}))
    with pytest.raises(DataLayoutError, match="'train' and/or 'test' lists"):
        build_dataset(f"realiad:{root}")
    document["test"][0]["image_path"] = "OK/S0099/absent.jpg"
    json_file.write_text(json.dumps(document))
    with pytest.raises(DataLayoutError, match="1 listed files do not exist.*S0099/absent.jpg"):
        build_dataset(f"realiad:{root}")
    del document["test"][0]["anomaly_class"]
    json_file.write_text(json.dumps(document))
    with pytest.raises(DataLayoutError, match=r"test\[0\]: expected an object with string 'image_path' and 'anomaly_class'"):
        build_dataset(f"realiad:{root}")
    shutil.rmtree(tmp_path / "realiad_jsons")
    with pytest.raises(DataLayoutError, match="no Real-IAD JSON splits found"):
        build_dataset(f"realiad:{root}")


# --- MVTec LOCO ---------------------------------------------------------------------------


def test_mvtec_loco_types_splits_and_merged_masks(tmp_path):
    expected = make_mvtec_loco_tree(tmp_path)
    dataset = build_dataset(f"mvtec-loco:{tmp_path}", image_size=SIZE)
    assert counts(dataset) == {"images": 5, "normal": expected["good"],
                               "anomalous": expected["logical"] + expected["structural"], "unknown": 0}  # fmt: skip
    types = [s.anomaly_type for s in dataset.samples]
    assert types.count("logical") == expected["logical"] and types.count("structural") == expected["structural"]
    assert len(build_dataset(f"mvtec-loco:{tmp_path}", split="train")) == expected["train"]
    assert len(build_dataset(f"mvtec-loco:{tmp_path}", split="validation")) == expected["validation"]
    merged = next(i for i, s in enumerate(dataset.samples) if s.anomaly_type == "logical" and s.image_path.stem == "000")
    sample = dataset.samples[merged]
    assert sample.mask_path.is_dir() and sample.defect_type == "logical_anomalies"
    parts = [load_array(p) > 0 for p in sorted(sample.mask_path.iterdir())]
    mask = dataset[merged]["mask"][0].numpy() > 0.5
    assert np.array_equal(mask, parts[0] | parts[1]) and not np.array_equal(mask, parts[0])
    single = [i for i, s in enumerate(dataset.samples) if s.label == 1 and i != merged]
    for index in single:
        red = load_array(dataset.samples[index].image_path, "RGB")[:, :, 0] > 150
        assert np.array_equal(dataset[index]["mask"][0].numpy() > 0.5, red)


def test_mvtec_loco_bad_input(tmp_path):
    make_mvtec_loco_tree(tmp_path)
    category = tmp_path / "breakfast_box"
    wrong_size = np.zeros((SIZE // 2, SIZE // 2), dtype=np.uint8)
    save(wrong_size, category / "ground_truth" / "logical_anomalies" / "001" / "001.png")
    dataset = build_dataset(f"mvtec-loco:{tmp_path}", image_size=SIZE)
    index = next(i for i, s in enumerate(dataset.samples) if s.mask_path and s.mask_path.name == "001" and s.anomaly_type == "logical")
    assert "16x16 (WxH)" in dataset[index]["error"]  # one part of the wrong size: that item fails, the loader does not
    shutil.rmtree(category / "ground_truth" / "structural_anomalies" / "000")
    with pytest.raises(DataLayoutError, match="1 anomalous images have no mask file"):
        build_dataset(f"mvtec-loco:{tmp_path}")
    save(plain(), category / "test" / "misc" / "000.png")
    with pytest.raises(DataLayoutError, match=r"unexpected folders \['misc'\]"):
        build_dataset(f"mvtec-loco:{tmp_path}")
    with pytest.raises(DataLayoutError, match="no category folder with a test/"):
        build_dataset(f"mvtec-loco:{category / 'train'}")


# --- AnomalyCLIP meta.json ----------------------------------------------------------------


@pytest.mark.parametrize("point_at_file", [True, False])
def test_anomalyclip_meta_json(tmp_path, point_at_file):
    meta = make_anomalyclip_meta(tmp_path)
    spec = f"anomalyclip-meta:{meta if point_at_file else tmp_path}"
    dataset = build_dataset(spec, image_size=SIZE)
    assert counts(dataset) == {"images": 4, "normal": 2, "anomalous": 2, "unknown": 0}
    assert dataset.has_masks and dataset.classes == ["bottle"]
    assert {s.defect_type for s in dataset.samples} == {None, "broken_large"}
    assert_masks_match_their_images(dataset)
    assert len(build_dataset(spec, split="train")) == 1


def test_anomalyclip_meta_without_masks_is_image_labels_only(tmp_path):
    meta = make_anomalyclip_meta(tmp_path)
    document = json.loads(meta.read_text())
    for record in document["test"]["bottle"]:
        record["mask_path"] = ""  # as its classification-only sets (HeadCT, BrainMRI) are written
    meta.write_text(json.dumps(document))
    dataset = build_dataset(f"anomalyclip-meta:{meta}")
    assert not dataset.has_masks and counts(dataset)["anomalous"] == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("test") and d.pop("train"), "'train' and/or 'test'"),
        (lambda d: d["test"]["bottle"][0].pop("img_path"), r"test\['bottle'\]\[0\]: missing keys \['img_path'\]"),
        (lambda d: d["test"]["bottle"][1].update(anomaly="yes"), r"'anomaly' must be 0 or 1, got 'yes'"),
        (lambda d: d["test"].update(bottle={"a": 1}), "must be a list of records"),
        (lambda d: d["test"]["bottle"][1].update(img_path="bottle/nowhere.png"), "1 listed files do not exist"),
    ],
)
def test_anomalyclip_meta_wrong_schema_names_the_record(tmp_path, edit, message):
    meta = make_anomalyclip_meta(tmp_path)
    document = json.loads(meta.read_text())
    edit(document)
    meta.write_text(json.dumps(document))
    with pytest.raises(DataLayoutError, match=message):
        build_dataset(f"anomalyclip-meta:{meta}")


def test_anomalyclip_meta_missing_or_broken_file(tmp_path):
    with pytest.raises(DataLayoutError, match="meta.json: file not found"):
        build_dataset(f"anomalyclip-meta:{tmp_path}")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataLayoutError, match="not valid JSON"):
        build_dataset(f"anomalyclip-meta:{tmp_path}")


# --- AA-CLIP / MoECLIP jsonl --------------------------------------------------------------


def test_aaclip_jsonl_with_a_separate_data_root(tmp_path):
    data_root, repository = tmp_path / "mvtec_ad", tmp_path / "AA-CLIP" / "dataset"
    jsonl = make_aaclip_jsonl(data_root, repository)
    dataset = build_dataset(f"aaclip-jsonl:{jsonl}:{data_root}", image_size=SIZE)
    assert counts(dataset) == {"images": 4, "normal": 2, "anomalous": 2, "unknown": 0}
    assert all(isinstance(s.label, int) for s in dataset.samples)  # 1.0 in the file
    assert dataset.has_masks
    assert_masks_match_their_images(dataset)
    with pytest.raises(DataLayoutError, match="has no train split"):
        build_dataset(f"aaclip-jsonl:{jsonl}:{data_root}", split="train")


def test_aaclip_jsonl_beside_its_data_and_as_a_folder(tmp_path):
    jsonl = make_aaclip_jsonl(tmp_path, tmp_path)
    moved = tmp_path / "full-shot.jsonl"
    jsonl.rename(moved)
    assert len(build_dataset(f"aaclip-jsonl:{moved}")) == 4
    assert len(build_dataset(f"aaclip-jsonl:{tmp_path}")) == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image_path": "bottle/test/good/000.png", "class_name": "bottle"}', r":1: missing keys \['label'\]"),
        ('{"image_path": "bottle/test/good/000.png", "label": 2, "class_name": "bottle"}', "'label' must be 0 or 1"),
        ('["a list"]', "expected a JSON object"),
        ("{broken", "not valid JSON"),
        ('{"image_path": "nowhere.png", "label": 0, "class_name": "bottle"}', "1 listed files do not exist"),
    ],
)
def test_aaclip_jsonl_bad_lines_name_their_line(tmp_path, line, message):
    make_aaclip_jsonl(tmp_path, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(DataLayoutError, match=message):
        build_dataset(f"aaclip-jsonl:{bad}")


def test_aaclip_jsonl_missing_file_or_root(tmp_path):
    jsonl = make_aaclip_jsonl(tmp_path / "data", tmp_path)
    with pytest.raises(DataLayoutError, match="data folder not found"):
        build_dataset(f"aaclip-jsonl:{jsonl}:{tmp_path / 'absent'}")
    with pytest.raises(DataLayoutError, match="metadata file not found"):
        build_dataset(f"aaclip-jsonl:{tmp_path / 'absent.jsonl'}")


def test_metadata_written_for_a_generated_mvtec_tree_reads_like_the_tree(tmp_path):
    from data_factories import make_mvtec_like_tree
    from new_layout_factories import write_aaclip_jsonl_for, write_anomalyclip_meta_for

    make_mvtec_like_tree(tmp_path / "mvtec", mask_suffix="_mask")
    tree = build_dataset(f"mvtec:{tmp_path / 'mvtec'}")
    meta = build_dataset(f"anomalyclip-meta:{write_anomalyclip_meta_for(tmp_path / 'mvtec')}")
    jsonl = write_aaclip_jsonl_for(tmp_path / "mvtec", tmp_path / "AA-CLIP" / "full-shot.jsonl")
    lines = build_dataset(f"aaclip-jsonl:{jsonl}:{tmp_path / 'mvtec'}")
    for dataset in (meta, lines):
        assert sorted((s.image_path, s.label, s.mask_path) for s in dataset.samples) == sorted(
            (s.image_path, s.label, s.mask_path) for s in tree.samples
        )


@pytest.mark.parametrize("kind", sorted(NEW_KINDS))
def test_empty_or_missing_folder_is_a_clear_error_naming_path_and_layout(tmp_path, kind):
    for path in (tmp_path, tmp_path / "absent"):
        with pytest.raises(DataLayoutError) as caught:
            build_dataset(f"{kind}:{path}")
        assert str(path) in str(caught.value) and "expected" in str(caught.value)
