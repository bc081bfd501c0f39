"""Few-shot mode: the memory-bank distance, its bounded chunked search, fusion with the
zero-shot output for every method, the reference draw, and the CLI options."""
from __future__ import annotations

import json

import pytest
import torch
import toy_method  # noqa: F401  (registers 'toy': a method written outside zsad gets these checks too)
from typer.testing import CliRunner

from zsad import memory_bank
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.engine.fewshot import draw_reference_paths
from zsad.memory_bank import block_shape, nearest_distance
from zsad.methods import available_methods, build_method, method_class
from zsad.methods.fewshot import FewShotDetector, FewShotSettings

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu", "--quiet"]


def _images(count: int, seed: int, size: int = 64) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _brute_force(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(queries, dim=-1)
    b = torch.nn.functional.normalize(bank, dim=-1)
    return (1 - (q @ b.T).amax(dim=1)) / 2


def test_distance_is_half_one_minus_the_best_cosine():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    queries = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [1.0, 1.0], [0.0, -5.0]])
    # same direction -> 0; nearest of (-1, 0) is orthogonal -> 1/2; 45 degrees -> (1 - cos 45)/2
    expected = torch.tensor([0.0, 0.5, (1 - 2**-0.5) / 2, 0.5])
    assert torch.allclose(nearest_distance(queries, bank), expected, atol=1e-6)
    assert nearest_distance(torch.tensor([[-1.0, 0.0]]), bank[:1]).item() == pytest.approx(1.0)


@pytest.mark.parametrize("cap", [1, 7, 64, 10_000])
def test_chunked_search_equals_the_full_matrix_product(cap):
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(37, 16, generator=generator), torch.randn(53, 16, generator=generator)
    assert torch.allclose(nearest_distance(queries, bank, cap), _brute_force(queries, bank), atol=1e-6)


@pytest.mark.parametrize("n_queries", [1, 10, 1000])
@pytest.mark.parametrize("n_bank", [1, 9, 100, 100_000])
@pytest.mark.parametrize("cap", [1, 50, 4096])
def test_block_shape_never_exceeds_the_cap(n_queries, n_bank, cap):
    rows, cols = block_shape(n_queries, n_bank, cap)
    assert 1 <= rows <= n_queries and 1 <= cols <= n_bank
    assert rows * cols <= cap


def test_more_shots_never_enlarge_the_largest_similarity_block(monkeypatch):
    blocks: list[tuple[int, int]] = []
    original = memory_bank.similarity_block

    def recording(queries, bank):
        blocks.append((queries.shape[0], bank.shape[0]))
        return original(queries, bank)

    monkeypatch.setattr(memory_bank, "similarity_block", recording)
    patches_per_image, cap = 64, 1000
    largest = {}
    for shots in (1, 2, 4, 16, 64):
        blocks.clear()
        bank = torch.randn(shots * patches_per_image, 8)
        nearest_distance(torch.randn(patches_per_image, 8), bank, max_block_elements=cap)
        largest[shots] = max(r * c for r, c in blocks)
        assert sum(c for r, c in blocks if r == blocks[0][0]) >= bank.shape[0]  # the whole bank is searched
    assert all(size <= cap for size in largest.values())
    assert largest[64] == largest[16]  # grows no further once the cap is reached


def test_empty_bank_and_mismatched_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        nearest_distance(torch.randn(3, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="feature sizes"):
        nearest_distance(torch.randn(3, 4), torch.randn(2, 5))


@pytest.fixture(params=[name for name in available_methods() if not method_class(name).scores_sets])  # set methods refuse fusion
def detector(request, tiny_backbone):
    torch.manual_seed(0)
    return build_method(request.param, tiny_backbone).eval()


def test_tapped_patch_features_have_documented_shapes(detector):
    features = detector.tapped_patch_features(_images(2, 1))
    grid = detector.backbone.grid[0] * detector.backbone.grid[1]
    assert tuple(features) == tuple(detector.feature_taps())
    assert all(f.shape == (2, grid, detector.backbone.width) for f in features.values())


def test_a_reference_identical_to_the_test_image_gives_a_near_zero_memory_map(detector):
    image = _images(1, 2)
    few_shot = FewShotDetector(detector)
    few_shot.add_references(image)
    assert few_shot.memory_map(image, ["object"]).abs().max() < 1e-5
    other = few_shot.memory_map(_images(1, 3), ["object"])
    assert other.min() > 1e-3  # random images do not share patches


def test_fusion_weight_zero_reproduces_the_zero_shot_output_bit_for_bit(detector):
    images = _images(2, 4)
    few_shot = FewShotDetector(detector, FewShotSettings(weight=0.0))
    few_shot.add_references(_images(2, 5))
    with torch.no_grad():
        zero_shot = detector(images, ["object"] * 2)
        fused = few_shot(images, ["object"] * 2)
    assert torch.equal(fused.anomaly_map, zero_shot.anomaly_map)
    assert torch.equal(fused.pred_score, zero_shot.pred_score)


def test_fusion_is_the_weighted_mean_of_both_parts(detector):
    images = _images(2, 6)
    few_shot = FewShotDetector(detector, FewShotSettings(weight=0.25))
    few_shot.add_references(_images(1, 7))
    with torch.no_grad():
        zero_shot = detector(images, ["object"] * 2)
        fused = few_shot(images, ["object"] * 2)
    memory = few_shot.memory_map(images, ["object"] * 2)
    assert torch.allclose(fused.anomaly_map, 0.75 * zero_shot.anomaly_map + 0.25 * memory, atol=1e-6)
    assert torch.allclose(fused.pred_score, 0.75 * zero_shot.pred_score + 0.25 * memory.flatten(1).amax(1), atol=1e-6)


def test_banks_are_kept_per_category(tiny_backbone):
    model = build_method("zeroshot", tiny_backbone)
    few_shot = FewShotDetector(model)
    image = _images(1, 8)
    few_shot.add_references(image, "tile")
    few_shot.add_references(_images(2, 9), "wood")
    assert few_shot.reference_count("wood") == 2 * few_shot.reference_count("tile")
    assert few_shot.memory_map(image, ["tile"]).max() < 1e-5
    assert few_shot.memory_map(image, ["wood"]).max() > 1e-3
    with pytest.raises(ValueError, match="no reference images for category 'cable'"):
        few_shot.memory_map(image, ["cable"])
    with pytest.raises(ValueError, match="weight"):
        FewShotSettings(weight=1.5)


@pytest.fixture(scope="module")
def mvtec_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["checker", "tile"], size=64, n_train=5, n_good=2, n_defect_per_kind=1)
    return root


def test_references_are_drawn_from_the_class_training_images_by_seed(mvtec_tree):
    spec = f"mvtec:{mvtec_tree}"
    drawn = draw_reference_paths(spec, "tile", 2, seed=0)
    assert len(set(drawn)) == 2
    assert all(path.parent == mvtec_tree / "tile" / "train" / "good" for path in drawn)
    assert drawn == draw_reference_paths(spec, "tile", 2, seed=0)
    assert len({tuple(draw_reference_paths(spec, "tile", 2, seed=s)) for s in range(6)}) > 1
    with pytest.raises(ValueError, match="fewer than --shots 6"):
        draw_reference_paths(spec, "tile", 6, seed=0)


def test_cli_test_with_shots_reports_mean_and_std_over_seeds(tmp_path, mvtec_tree):
    out = tmp_path / "fewshot"
    args = ["test", "--data", f"mvtec:{mvtec_tree}", "--out", str(out), "--shots", "2", "--shot-seed", "0", "--shot-seed", "1"]
    result = CliRunner().invoke(app, args + TINY)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["shots"] == 2 and report["few_shot"]["seeds"] == [0, 1]
    per_seed = report["few_shot"]["per_seed"]
    assert [len(refs) for refs in per_seed[0]["references"].values()] == [2, 2]
    auroc = [run["mean"]["pixel_auroc"] for run in per_seed]
    assert report["mean"]["pixel_auroc"] == pytest.approx(sum(auroc) / 2)
    assert report["few_shot"]["std_over_seeds"]["pixel_auroc"] == pytest.approx(abs(auroc[0] - auroc[1]) / 2)
    assert "2-shot, mean ± std over 2 seed(s)" in (out / "metrics.md").read_text()


def test_cli_predict_with_references_differs_from_zero_shot_only_by_the_fusion(tmp_path, mvtec_tree):
    images = mvtec_tree / "tile" / "test"
    runner = CliRunner()
    torch.manual_seed(0)  # the same random backbone for both runs
    plain = runner.invoke(app, ["predict", str(images), "--out", str(tmp_path / "zs"), *TINY])
    torch.manual_seed(0)
    weight0 = runner.invoke(
        app,
        [
            "predict",
            str(images),
            "--out",
            str(tmp_path / "w0"),
            "--reference",
            str(mvtec_tree / "tile" / "train" / "good"),
            "--fusion-weight",
            "0",
            *TINY,
        ],
    )
    assert plain.exit_code == 0 and weight0.exit_code == 0, weight0.output
    zs = json.loads((tmp_path / "zs" / "scores.json").read_text())
    w0 = json.loads((tmp_path / "w0" / "scores.json").read_text())
    assert [r["score"] for r in zs["images"]] == [r["score"] for r in w0["images"]]
    assert w0["meta"]["references"] == 5 and w0["meta"]["fusion_weight"] == 0.0
    missing = runner.invoke(app, ["predict", str(images), "--out", str(tmp_path / "x"), "--reference", str(tmp_path / "none"), *TINY])
    assert missing.exit_code == 1 and "not found" in missing.output
