"""Expert analyses of a routed method (MoECLIP here): selection maps, inter-expert similarity, utilisation,
patch statistics, their accumulation, and the `zsad analyze experts` command."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import typer
from scipy import ndimage
from typer.testing import CliRunner

from zsad.analysis import (
    ExpertAnalysisAccumulator,
    expert_similarity,
    patch_statistics,
    selection_maps,
    shares,
    to_grayscale,
    to_uint8_rgb,
    utilisation,
)
from zsad.analysis.patches import _sobel_magnitude, _tiles
from zsad.analysis.run import default_statistics_block, load_analysis_data, routing_layout, spread_indices
from zsad.api import full_config
from zsad.checkpoints import save_checkpoint
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.data.transforms import normalize_image
from zsad.methods import build_method
from zsad.methods.base import Routing
from zsad.methods.moeclip.model import patch_routing
from zsad.methods.moeclip.moe import MoeAdapter


def _random_routing(batch=3, grid=(4, 4), num_experts=4, top_k=2, width=6, seed=0) -> Routing:
    generator = torch.Generator().manual_seed(seed)
    tokens = grid[0] * grid[1]
    logits = torch.randn(batch, tokens, num_experts, generator=generator)
    probabilities = logits.softmax(-1)
    weights, index = probabilities.topk(top_k, dim=-1)
    outputs = torch.randn(batch, tokens, num_experts, width, generator=generator)
    return Routing(probabilities, index, weights / weights.sum(-1, keepdim=True), outputs, grid)


# ------------------------------------------------------------------ routing side


def test_patch_routing_and_selection_maps_follow_the_token_order():
    adapter = MoeAdapter(16, num_experts=4, top_k=2, rank=2, dispatch="dense").eval()
    hidden = torch.randn(2, 1 + 3 * 3, 16)
    with torch.no_grad():
        output = adapter(hidden)
    routing = patch_routing(output, (3, 3))
    assert routing.grid == (3, 3) and routing.num_experts == 4 and routing.top_k == 2 and routing.expert_outputs.shape == (2, 9, 4, 16)
    experts, weights = selection_maps(routing, ranks=2)
    assert experts.shape == weights.shape == (2, 2, 3, 3)
    assert experts.dtype == np.int64 and experts.min() >= 0 and experts.max() < 4
    # patch (row 1, col 2) is token 1 + 1 * 3 + 2 of the full sequence
    for rank in range(2):
        assert experts[1, rank, 1, 2] == output.topk_index[1, 6, rank]
        assert weights[1, rank, 1, 2] == pytest.approx(float(output.topk_weight[1, 6, rank]))
    assert np.all(experts[:, 0] != experts[:, 1])  # a patch's two choices differ
    assert np.all(weights[:, 0] >= weights[:, 1])
    top1_only, _ = selection_maps(routing, ranks=1)
    assert top1_only.shape == (2, 1, 3, 3)


def test_similarity_is_symmetric_with_unit_diagonal():
    routing = _random_routing()
    total, count = expert_similarity(routing.expert_outputs, routing.topk_index)
    mean = total / np.maximum(count, 1)
    assert np.allclose(mean, mean.T)
    counted = np.diag(count) > 0
    assert counted.any()
    assert np.allclose(np.diag(mean)[counted], 1.0)
    assert np.all(np.abs(mean) <= 1.0 + 1e-12)


def test_similarity_of_hand_made_expert_means():
    # one image, 3 patches, 3 experts, top-2; expert means: e0 = (1, 0), e1 = (1, 1), e2 = (0, -2)
    index = torch.tensor([[[0, 1], [0, 2], [1, 2]]])
    outputs = torch.zeros(1, 3, 3, 2)
    outputs[0, 0, 0], outputs[0, 1, 0] = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])  # mean (1, 0)
    outputs[0, 0, 1], outputs[0, 2, 1] = torch.tensor([1.0, 3.0]), torch.tensor([1.0, -1.0])  # mean (1, 1)
    outputs[0, 1, 2], outputs[0, 2, 2] = torch.tensor([0.0, -1.0]), torch.tensor([0.0, -3.0])  # mean (0, -2)
    outputs[0, 2, 0] = torch.tensor([100.0, 100.0])  # expert 0 not selected by patch 2: ignored
    total, count = expert_similarity(outputs, index)
    assert np.all(count == 1)
    assert total[0, 1] == pytest.approx(1 / math.sqrt(2))
    assert total[0, 2] == pytest.approx(0.0)
    assert total[1, 2] == pytest.approx(-1 / math.sqrt(2))


def test_identical_expert_outputs_have_cosine_one():
    routing = _random_routing(seed=1)
    outputs = routing.expert_outputs.clone()
    outputs[:, :, 2] = outputs[:, :, 0]
    # expert 0 and 2 also take the same patches: their means coincide
    index = torch.stack([torch.zeros_like(routing.topk_index[..., 0]), torch.full_like(routing.topk_index[..., 0], 2)], -1)
    total, count = expert_similarity(outputs, index)
    assert count[0, 2] == 3 and total[0, 2] == pytest.approx(3.0)


def test_an_unused_or_silent_expert_is_left_out_of_its_rows_and_columns():
    outputs = _random_routing(batch=2, num_experts=4, seed=2).expert_outputs[:, :4]  # (2, 4, 4, d)
    outputs[1, :, 1] = 0.0  # expert 1 outputs zero on image 1: its mean has no direction
    index = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]]).unsqueeze(-1)  # top-1; image 0 never uses expert 3
    total, count = expert_similarity(outputs, index)
    # present: image 0 -> experts {0, 1, 2}; image 1 -> experts {0, 2, 3}
    expected = np.array([[2, 1, 2, 1], [1, 1, 1, 0], [2, 1, 2, 1], [1, 0, 1, 1]])
    assert np.array_equal(count, expected)
    assert np.all(total[count == 0] == 0)
    assert np.allclose(np.diag(total), np.diag(count))
    zeros_total, zeros_count = expert_similarity(torch.zeros(1, 4, 4, 5), index[:1])
    assert not zeros_count.any() and not zeros_total.any()


def test_utilisation_counts_and_shares():
    index = torch.tensor([[[0, 1], [0, 2], [1, 0], [3, 0]]])  # (B=1, L=4, k=2)
    top1, topk = utilisation(index, 4)
    assert top1.tolist() == [2, 1, 0, 1]
    assert topk.tolist() == [4, 2, 1, 1]
    routing = _random_routing(batch=5, grid=(6, 6), num_experts=5, top_k=3, seed=4)
    top1, topk = utilisation(routing.topk_index, 5)
    assert top1.sum() == 5 * 36 and topk.sum() == 5 * 36 * 3
    assert shares(top1).sum() == pytest.approx(1.0) and shares(topk).sum() == pytest.approx(1.0)
    assert np.all(topk <= 5 * 36)  # an expert fills at most one slot of a patch
    assert np.isnan(shares(np.zeros(3))).all()


# ------------------------------------------------------------------ image side


def test_patch_statistics_on_hand_made_patches():
    p = 4
    gray = np.zeros((8, 12), np.uint8)
    gray[0:4, 4:8] = 200  # patch 1: constant bright, next to constant dark patches
    gray[0:4, 8:10] = 255  # patch 2: half white (left) / half black
    gray[4:8, 0:4] = np.arange(16, dtype=np.uint8).reshape(4, 4)  # patch 3: 16 distinct values
    stats = patch_statistics(gray, p)
    assert all(values.shape == (6,) for values in stats.values())
    for constant in (0, 1, 4, 5):
        assert stats["std"][constant] == 0 and stats["entropy"][constant] == 0 and stats["gradient"][constant] == 0
    assert stats["entropy"][2] == pytest.approx(1.0, abs=1e-12)
    assert stats["std"][2] == pytest.approx(127.5)
    assert stats["gradient"][2] > 0
    assert stats["entropy"][3] == pytest.approx(4.0)  # 16 equally likely levels


def test_stacked_sobel_equals_sobel_of_each_patch_alone():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 18), dtype=np.uint8)
    tiles = _tiles(gray, 6)
    stacked = _sobel_magnitude(tiles)
    for tile, result in zip(tiles.astype(np.float64), stacked):
        expected = np.hypot(ndimage.sobel(tile, axis=0), ndimage.sobel(tile, axis=1))
        assert np.allclose(result, expected)
    with pytest.raises(ValueError):
        patch_statistics(gray, 5)


def test_model_input_is_unnormalised_back_to_its_pixels():
    pixels = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    rgb = to_uint8_rgb(normalize_image(pixels))
    assert rgb.shape == (8, 8, 3) and np.array_equal(rgb, pixels.permute(1, 2, 0).numpy())
    gray_input = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None], 3, axis=2)
    assert np.array_equal(to_grayscale(gray_input), gray_input[..., 0])
    assert to_grayscale(np.full((1, 1, 3), (255, 0, 0), np.uint8))[0, 0] == 76  # 0.299 * 255


# ------------------------------------------------------------------ accumulation


def test_accumulator_pools_data_sets_and_assigns_statistics_by_top1():
    grid, p = (2, 2), 4
    accumulator = ExpertAnalysisAccumulator((6, 12), num_experts=3, top_k=2, statistics_block=12, patch_size=p)
    image = np.zeros((8, 8), np.uint8)
    image[0:4, 4:8] = 255 * (np.arange(4) % 2)[None, :]  # patch 1: stripes (edges, entropy 1)
    first = _random_routing(batch=1, grid=grid, num_experts=3, seed=5)
    first.topk_index = torch.tensor([[[0, 1], [2, 0], [0, 2], [0, 1]]])  # patch 1 -> expert 3 (index 2)
    second = _random_routing(batch=2, grid=grid, num_experts=3, seed=6)
    accumulator.add("a", {6: first, 12: first}, image[None])
    accumulator.add("b", {6: second, 12: second}, np.stack([image, image]))
    accumulator.add_dataset("empty")
    analysis = accumulator.result()
    assert analysis.datasets == ["a", "b", "empty"]
    assert analysis.images() == 3 and analysis.images("a") == 1 and analysis.images("empty") == 0

    pooled_count = analysis.similarity_count(6)
    assert np.array_equal(pooled_count, analysis.similarity_count(6, "a") + analysis.similarity_count(6, "b"))
    pooled = analysis.similarity(6)
    total_a, _ = expert_similarity(first.expert_outputs, first.topk_index)
    total_b, _ = expert_similarity(second.expert_outputs, second.topk_index)
    assert np.allclose(np.nan_to_num(pooled * pooled_count), total_a + total_b)
    assert np.isnan(analysis.similarity(6, "empty")).all()

    used = analysis.utilisation(12)
    assert used["top1_share"].sum() == pytest.approx(1.0) and used["topk_share"].sum() == pytest.approx(1.0)
    assert used["top1_count"].sum() == 3 * 4

    stats_a = analysis.statistics("a")
    assert stats_a["patches"].tolist() == [3, 0, 1]
    assert stats_a["entropy"][2] == pytest.approx(1.0) and stats_a["std"][2] == pytest.approx(127.5)
    assert stats_a["entropy"][0] == 0 and np.isnan(stats_a["gradient"][1])
    assert analysis.statistics()["patches"].sum() == 3 * 4

    with pytest.raises(ValueError):
        ExpertAnalysisAccumulator((6, 12), 3, 2, statistics_block=18, patch_size=p)
    sparse = Routing(first.probabilities, first.topk_index, first.topk_weight, None, grid)
    with pytest.raises(ValueError, match="expert outputs are missing"):
        accumulator.add("a", {6: sparse, 12: sparse}, image[None])


def test_keeping_expert_outputs_runs_densely_and_restores_the_setting(tiny_backbone):
    model = build_method("moeclip", tiny_backbone, {}).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert all(layer.expert_outputs is None for layer in model(images, ["object"] * 2).routing.values())
        with model.keeping_expert_outputs():
            output = model(images, ["object"] * 2)
    routing = output.routing
    assert list(routing) == [str(block) for block in model.blocks]
    layer = routing[str(model.blocks[0])]
    assert layer.grid == tiny_backbone.grid and layer.expert_outputs.shape[:3] == (2, 64, 4)
    assert all(layer.dispatch == model.config.dispatch for layer in model.moe_layers)
    assert default_statistics_block(("6", "12", "18", "24")) == "18" and default_statistics_block(("3", "5")) == "5"
    layout = routing_layout(model, torch.device("cpu"))
    assert layout.layers == tuple(routing) and (layout.num_experts, layout.top_k) == (4, 2)
    with pytest.raises(ValueError, match="reports no routing"):
        routing_layout(build_method("zeroshot", tiny_backbone, {}), torch.device("cpu"))


def test_spread_indices_and_class_selection(tmp_path):
    assert spread_indices(10, None) == list(range(10)) and spread_indices(3, 5) == [0, 1, 2]
    assert spread_indices(10, 3) == [0, 4, 9]
    generate_mvtec_like(tmp_path, categories=["stripes", "disc"], size=32, n_train=0, n_good=1, n_defect_per_kind=1)
    data = load_analysis_data([f"mvtec:{tmp_path}", f"mvtec:{tmp_path}"], 32, classes=["disc"], max_images=2)
    assert [item.name for item in data] == ["mvtec", "mvtec_2"]
    assert all(len(item.indices) == 2 and set(item.dataset.classes) == {"disc"} for item in data)
    with pytest.raises(ValueError, match="none of the data sets"):
        load_analysis_data([f"mvtec:{tmp_path}"], 32, classes=["bottle"])


# ------------------------------------------------------------------ command line


def test_cli_writes_every_analysis_and_skips_unreadable_images(tiny_backbone, tmp_path):
    model = build_method("moeclip", tiny_backbone, {"blocks": [2, 4]})
    with torch.no_grad():
        for layer in model.moe_layers:
            layer.experts.lora_b.normal_(0, 0.5)
    checkpoint = tmp_path / "moeclip.safetensors"
    save_checkpoint(checkpoint, model.trainable_state_dict(), full_config(model))
    generate_mvtec_like(tmp_path / "data", categories=["checker"], size=64, n_train=0, n_good=1, n_defect_per_kind=1)
    broken = tmp_path / "data" / "checker" / "test" / "scratch" / "000.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    arguments = ["analyze", "experts", "--checkpoint", str(checkpoint), "--data", f"mvtec:{tmp_path / 'data'}",
                 "--out", str(out), "--selection-maps", "1", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output  # one unreadable image
    assert "skipped" in result.output
    assert "No t-SNE of expert prompts: 'moeclip' has no learned expert prompts" in " ".join(result.output.split())

    names = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    expected = {"analysis.md", "analysis.json", "utilisation.csv", "expert_statistics.csv", "expert_statistics.md"}
    for block in (2, 4):
        expected |= {f"similarity_block{block}.csv", f"similarity_block{block}.png", f"utilisation_block{block}.png",
                     f"similarity_mvtec_block{block}.csv", f"similarity_mvtec_block{block}.png",
                     f"selection/mvtec/checker_cut_000_block{block}_top1.png",
                     f"selection/mvtec/checker_cut_000_block{block}_top2.png"}
    assert names == expected

    report = json.loads((out / "analysis.json").read_text())
    assert report["statistics_block"] == 4 and report["pipeline_check"] is True
    assert report["datasets"]["mvtec"]["images"] == 4
    assert [error["path"] for error in report["errors"]] == [str(broken)]
    assert "PIPELINE CHECK" in (out / "analysis.md").read_text()
    with open(out / "similarity_block2.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["expert_1", "expert_2", "expert_3", "expert_4"] and len(rows) == 5
    matrix = np.array([[float(cell) if cell else np.nan for cell in row] for row in rows[1:]])
    assert np.allclose(matrix, matrix.T, equal_nan=True)
    with open(out / "utilisation.csv") as handle:
        utilisation_rows = list(csv.DictReader(handle))
    for block in ("2", "4"):
        assert sum(float(row["top1_share"]) for row in utilisation_rows if row["block"] == block) == pytest.approx(1.0, abs=1e-5)
    with open(out / "expert_statistics.csv") as handle:
        statistics_rows = list(csv.DictReader(handle))
    assert sum(int(row["patches"]) for row in statistics_rows if row["dataset"] == "all") == 4 * 64

    refused = CliRunner().invoke(app, arguments)
    assert refused.exit_code == 1 and "exists" in refused.output
    wrong_layer = CliRunner().invoke(app, [*arguments, "--overwrite", "--layer", "3"])
    assert wrong_layer.exit_code == 1 and "is not routed" in wrong_layer.output
