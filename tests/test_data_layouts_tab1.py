"""The kinds that complete the papers' Tab. 1: KSDD, DAGM, BMAD (Brain MRI, Liver CT, Retina OCT),
CVC-ColonDB, CVC-300, Endo, ISIC — counts, labels, aligned masks, splits, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_factories import load_array, save, square_image, square_mask, write_text_file
from layout_factories import (
    SIZE,
    make_bmad_tree,
    make_dagm_tree,
    make_isic_tree,
    make_ksdd_tree,
    make_tree,
)

from zsad.data import DATASET_KINDS, DataLayoutError, build_dataset
from zsad.engine.benchmark import paper_results
from zsad.imageio import read_mask

NEW_KINDS = ["ksdd", "dagm", "bmad-brainmri", "bmad-liverct", "bmad-retinaoct", "colondb", "cvc300", "endo", "isic"]
ONE_CLASS = {"ksdd": "ksdd", "bmad-brainmri": "brainmri", "bmad-liverct": "liverct", "bmad-retinaoct": "retinaoct",
             "colondb": "colondb", "cvc300": "cvc300", "endo": "endo", "isic": "isic"}  # fmt: skip
PAPERS = ["moeclip", "promptmoe", "wmoeclip"]


def test_every_row_of_every_papers_tab_1_has_a_kind():
    for method in PAPERS:
        rows = set(paper_results(method))
        assert rows and rows <= set(DATASET_KINDS), (method, rows - set(DATASET_KINDS))


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_counts_labels_and_aligned_masks(kind, tmp_path):
    expected = make_tree(kind, tmp_path)
    dataset = build_dataset(f"{kind}:{tmp_path}", image_size=16)
    labels = [s.label for s in dataset.samples]
    assert labels.count(0) == expected["normal"] and labels.count(1) == expected["anomalous"]
    assert dataset.has_masks and dataset.has_image_labels == (expected["normal"] > 0)
    if kind in ONE_CLASS:
        assert dataset.classes == [ONE_CLASS[kind]]
    for sample in dataset.samples:
        if sample.label == 0:
            assert sample.mask_path is None
            continue
        image_key = sample.image_path.stem
        mask_key = sample.mask_path.stem.removesuffix("_label").removesuffix("_Segmentation")
        assert mask_key == image_key, (sample.image_path, sample.mask_path)
        with_mask = read_mask(sample.mask_path, load_array(sample.image_path).shape[1::-1], sample.image_path)
        assert with_mask.any() and not with_mask.all()
    items = [dataset[i] for i in range(len(dataset))]
    assert all(item["error"] == "" for item in items)
    for item, sample in zip(items, dataset.samples):
        assert item["label"] == sample.label and bool(item["mask"].any()) == (sample.label == 1)


@pytest.mark.parametrize("kind", ["colondb", "cvc300", "endo", "isic", "ksdd"])
def test_sets_without_a_train_split_refuse_it(kind, tmp_path):
    make_tree(kind, tmp_path)
    with pytest.raises(DataLayoutError, match="no train split"):
        build_dataset(f"{kind}:{tmp_path}", split="train")


def test_bmad_reads_train_and_test_and_skips_valid(tmp_path):
    counts = make_bmad_tree(tmp_path)
    train = build_dataset(f"bmad-liverct:{tmp_path}", split="train")
    assert len(train) == counts["train"] and {s.label for s in train.samples} == {0}
    test = build_dataset(f"bmad-liverct:{tmp_path}")
    assert all(s.image_path.parts[-4] == "test" for s in test.samples)
    assert len(build_dataset(f"bmad-liverct:{tmp_path}", split="all")) == counts["train"] + len(test)


def test_dagm_takes_test_and_the_normal_train_images_per_class(tmp_path):
    make_dagm_tree(tmp_path)
    test = build_dataset(f"dagm:{tmp_path}")
    assert test.classes == ["Class1", "Class2"]
    assert all(s.image_path.parent.name == "Test" for s in test.samples)
    for sample in test.samples:  # defective exactly when Label/NNNN_label.PNG exists
        assert sample.label == int((sample.image_path.parent / "Label" / f"{sample.image_path.stem}_label.PNG").is_file())
    train = build_dataset(f"dagm:{tmp_path}", split="train")
    assert len(train) == 4 and {s.label for s in train.samples} == {0}
    assert all(s.image_path.parent.name == "Train" for s in train.samples)


def test_ksdd_labels_come_from_the_mask_content(tmp_path):
    make_ksdd_tree(tmp_path)
    dataset = build_dataset(f"ksdd:{tmp_path}")
    anomalous = {(s.image_path.parent.name, s.image_path.stem) for s in dataset.samples if s.label == 1}
    assert anomalous == {("kos01", "Part2"), ("kos02", "Part0")}
    assert [s.image_path.suffix for s in dataset.samples] == [".jpg"] * 6  # the .bmp masks are not images


def test_isic_skips_superpixel_maps(tmp_path):
    make_isic_tree(tmp_path)
    save(square_image(SIZE), tmp_path / "ISBI2016_ISIC_Part1_Test_Data" / "ISIC_0000000_superpixels.png")
    assert len(build_dataset(f"isic:{tmp_path}")) == 3


def test_adaclip_reorganised_trees_read_as_one_class(tmp_path):
    for kind, class_dir in (("ksdd", "SDD"), ("isic", "isic"), ("colondb", "ColonDB"), ("endo", "endo")):
        root = tmp_path / kind
        save(square_image(SIZE), root / class_dir / "test" / "defect" / "a.png")
        save(square_mask(SIZE), root / class_dir / "ground_truth" / "defect" / "a_mask.png")
        save(square_image(SIZE, colour=(90, 90, 90)), root / class_dir / "test" / "good" / "b.png")
        dataset = build_dataset(f"{kind}:{root}")
        assert dataset.classes == [ONE_CLASS[kind]]
        assert sorted(s.label for s in dataset.samples) == [0, 1]


def test_adaclip_dagm_tree_keeps_its_classes_and_label_masks(tmp_path):
    for class_name in ("Class1", "Class2"):
        save(square_image(SIZE), tmp_path / class_name / "test" / "defect" / "0007.PNG", format="PNG")
        save(square_mask(SIZE), tmp_path / class_name / "ground_truth" / "defect" / "0007_label.PNG", format="PNG")
        save(square_image(SIZE, colour=(90, 90, 90)), tmp_path / class_name / "test" / "good" / "0001.PNG", format="PNG")
    dataset = build_dataset(f"dagm:{tmp_path}")
    assert dataset.classes == ["Class1", "Class2"]
    assert all(s.mask_path.name == "0007_label.PNG" for s in dataset.samples if s.label == 1)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_missing_or_empty_folder_is_one_clear_error(kind, tmp_path):
    with pytest.raises(DataLayoutError, match="expected layout"):
        build_dataset(f"{kind}:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataLayoutError, match="expected layout"):
        build_dataset(f"{kind}:{tmp_path / 'empty'}")


def test_bmad_without_label_folder_names_the_unmasked_images(tmp_path):
    make_bmad_tree(tmp_path)
    shutil.rmtree(tmp_path / "test" / "Ungood" / "label")
    with pytest.raises(DataLayoutError, match="3 anomalous images have no mask"):
        build_dataset(f"bmad-retinaoct:{tmp_path}")


@pytest.mark.parametrize("kind", ["colondb", "cvc300", "endo"])
def test_polyp_set_without_masks_folder(kind, tmp_path):
    make_tree(kind, tmp_path)
    shutil.rmtree(tmp_path / "masks")
    with pytest.raises(DataLayoutError, match="mask folder 'masks' not found"):
        build_dataset(f"{kind}:{tmp_path}")


def test_isic_image_without_its_segmentation(tmp_path):
    make_isic_tree(tmp_path)
    (tmp_path / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_0000001_Segmentation.png").unlink()
    with pytest.raises(DataLayoutError, match="1 anomalous images have no mask.*ISIC_0000001.jpg"):
        build_dataset(f"isic:{tmp_path}")


def test_ksdd_image_without_label_and_unreadable_label(tmp_path):
    make_ksdd_tree(tmp_path)
    (tmp_path / "kos01" / "Part1_label.bmp").unlink()
    with pytest.raises(DataLayoutError, match="no Part1_label.* mask beside it"):
        build_dataset(f"ksdd:{tmp_path}")
    write_text_file(tmp_path / "kos01" / "Part1_label.bmp")
    with pytest.raises(DataLayoutError, match="cannot read the label mask"):
        build_dataset(f"ksdd:{tmp_path}")


def test_dagm_without_class_test_folders(tmp_path):
    save(square_image(SIZE), tmp_path / "Class1" / "Val" / "0001.PNG", format="PNG")
    with pytest.raises(DataLayoutError, match="no ClassN/Test folder"):
        build_dataset(f"dagm:{tmp_path}")


def test_dagm_mask_of_another_size_is_reported_when_read(tmp_path):
    make_dagm_tree(tmp_path)
    label = tmp_path / "Class1" / "Test" / "Label" / "0003_label.PNG"
    save(np.zeros((5, 5), dtype=np.uint8), label, format="PNG")
    dataset = build_dataset(f"dagm:{tmp_path}")
    index = next(i for i, s in enumerate(dataset.samples) if s.mask_path == label)
    assert "mask" in dataset[index]["error"] and "5x5" in dataset[index]["error"]


def test_reorganised_tree_without_ground_truth_is_refused(tmp_path):
    # AnomalyCLIP keeps ISIC's masks in skin/ISBI2016_ISIC_Part1_Test_GroundTruth beside skin/test/
    save(square_image(SIZE), tmp_path / "skin" / "test" / "lesion" / "ISIC_0000000.jpg", quality=95)
    save(square_mask(SIZE), tmp_path / "skin" / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_0000000_Segmentation.png")
    with pytest.raises(DataLayoutError, match="without a ground_truth/ folder"):
        build_dataset(f"isic:{tmp_path}")
