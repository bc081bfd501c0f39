"""PromptMoE Fig. 8: the t-SNE of the expert prompts' mean tokens and the per-pool
dispersion (`zsad analyze experts`), on zsad-tiny checkpoints with random weights."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import typer
from sklearn.manifold import trustworthiness
from typer.testing import CliRunner

from zsad.analysis.prompt_tsne import (
    claim_holds,
    default_perplexity,
    dispersion_report,
    expert_mean_tokens,
    expert_tsne,
    mean_pairwise_cosine_distance,
    tsne_embedding,
)
from zsad.api import full_config
from zsad.checkpoints import save_checkpoint
from zsad.cli import app
from zsad.data.synth import generate_mvtec_like
from zsad.errors import InvalidInputError
from zsad.methods import build_method


def _promptmoe(tiny_backbone, **overrides):
    model = build_method("promptmoe", tiny_backbone, overrides)
    with torch.no_grad():  # learned-looking prompts: far from the tiny init_std
        for name, parameter in model.named_parameters():
            if name.endswith("experts"):
                parameter.normal_(0.0, 1.0)
    return model


def _slow_mean_tokens(model) -> dict[tuple[str, str, int], list[float]]:
    """(block, pool, 1-based expert) -> mean token, by loops over the raw saved tensors."""
    state = model.trainable_state_dict()
    means = {}
    for module_index, block in enumerate(model.prompt_blocks):
        for pool in ("normal", "abnormal"):
            experts = state[f"prompt_modules.{module_index}.pools.{pool}.experts"]
            for expert in range(experts.shape[0]):
                tokens = experts[expert].tolist()
                means[(str(block), pool, expert + 1)] = [sum(column) / len(tokens) for column in zip(*tokens)]
    return means


def test_mean_tokens_equal_a_slow_reference_from_the_raw_parameters(tiny_backbone):
    model = _promptmoe(tiny_backbone, num_experts=3, top_k=2, normal_length=2, abnormal_length=4)
    points = expert_mean_tokens(model.expert_prompts())
    reference = _slow_mean_tokens(model)
    assert len(points) == len(reference) == len(model.prompt_blocks) * (3 + 3)
    for index in range(len(points)):
        key = (points.layers[index], points.pools[index], points.experts[index])
        np.testing.assert_allclose(points.vectors[index], reference[key], rtol=1e-6, atol=1e-7)


def test_expert_prompts_per_layout(tiny_backbone):
    single = _promptmoe(tiny_backbone, per_layer_prompts=False, num_experts=2, top_k=1)
    prompts = single.expert_prompts()
    assert list(prompts) == [str(single.prompt_blocks[0])]
    assert {pool: tuple(t.shape) for pool, t in prompts[str(single.prompt_blocks[0])].items()} == {
        "normal": (2, 5, tiny_backbone.text_width), "abnormal": (2, 6, tiny_backbone.text_width),
    }
    assert not any(t.requires_grad for pools in prompts.values() for t in pools.values())
    shared = _promptmoe(tiny_backbone, shared_pool=True, num_experts=2, top_k=1).expert_prompts()
    assert all(set(pools) == {"shared"} and pools["shared"].shape[1] == 6 for pools in shared.values())
    assert build_method("zeroshot", tiny_backbone, {}).expert_prompts() == {}


def test_dispersion_is_the_mean_pairwise_cosine_distance_by_hand():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # pairs: orthogonal (1), 45 degrees (1 - 1/sqrt 2) twice
    expected = (1.0 + 2 * (1.0 - 1.0 / math.sqrt(2.0))) / 3
    assert mean_pairwise_cosine_distance(vectors) == pytest.approx(expected, abs=1e-12)
    assert mean_pairwise_cosine_distance(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(mean_pairwise_cosine_distance(np.ones((1, 3))))
    with pytest.raises(ValueError, match="zero vector"):
        mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_dispersion_rows_use_the_mean_tokens_and_average_layers():
    # Each expert's tokens average to the chosen mean token (the tokens are mean +/- noise).
    def pool(means):
        means = torch.tensor(means, dtype=torch.float64)
        noise = torch.tensor([[0.3, -0.1], [-0.3, 0.1]], dtype=torch.float64)
        return means[:, None, :] + noise[None]  # (E, 2, 2)

    prompts = {
        "6": {"normal": pool([[1.0, 0.1], [1.0, -0.1]]), "abnormal": pool([[1.0, 0.0], [0.0, 1.0]])},
        "12": {"normal": pool([[1.0, 0.0], [1.0, 0.0]]), "abnormal": pool([[1.0, 0.0], [-1.0, 0.0]])},
    }
    result = expert_tsne(prompts, seed=0)
    table = {(row["layer"], row["pool"]): row["mean_pairwise_cosine_distance"] for row in result.dispersion}
    near = 1.0 - (1.0 - 0.01) / (1.0 + 0.01)  # cos of (1, 0.1) and (1, -0.1)
    assert table[("6", "normal")] == pytest.approx(near)
    assert table[("6", "abnormal")] == pytest.approx(1.0)
    assert table[("12", "normal")] == pytest.approx(0.0, abs=1e-12)
    assert table[("12", "abnormal")] == pytest.approx(2.0)
    assert table[("all", "normal")] == pytest.approx(near / 2)
    assert table[("all", "abnormal")] == pytest.approx(1.5)
    assert claim_holds(result.dispersion) == {"6": True, "12": True, "all": True}
    assert "layer 12: normal 0.000, abnormal 2.000 (abnormal more dispersed)" in dispersion_report(result.dispersion)
    swapped = [{**row, "pool": {"normal": "abnormal", "abnormal": "normal"}[row["pool"]]} for row in result.dispersion]
    assert claim_holds(swapped) == {"6": False, "12": False, "all": False}
    norms = {(row["layer"], row["pool"], row["expert"]): row["mean_token_norm"] for row in result.rows}
    assert norms[("6", "normal", 1)] == pytest.approx(math.hypot(1.0, 0.1))


def test_the_same_seed_gives_the_same_embedding():
    vectors = np.random.default_rng(0).normal(size=(24, 16))
    first, perplexity = tsne_embedding(vectors, seed=3)
    again, _ = tsne_embedding(vectors, seed=3)
    assert perplexity == pytest.approx(23 / 3)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (24, 2) and np.isfinite(first).all() and np.ptp(first, axis=0).min() > 0


def test_tsne_keeps_two_well_separated_clusters_apart():
    rng = np.random.default_rng(1)
    centre = np.zeros(32)
    centre[0] = 12.0
    vectors = np.concatenate([rng.normal(size=(16, 32)), centre + rng.normal(size=(16, 32))])
    labels = np.repeat([0, 1], 16)
    embedded, _ = tsne_embedding(vectors, seed=0)
    assert trustworthiness(vectors, embedded, n_neighbors=5) > 0.9
    # In the plane every point's nearest neighbour is of its own cluster, and the two
    # clusters' centroids lie farther apart than any point from its own centroid.
    distances = np.linalg.norm(embedded[:, None] - embedded[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert np.all(labels[distances.argmin(axis=1)] == labels)
    centroids = np.stack([embedded[labels == k].mean(axis=0) for k in (0, 1)])
    spread = max(np.linalg.norm(embedded[labels == k] - centroids[k], axis=1).max() for k in (0, 1))
    assert np.linalg.norm(centroids[0] - centroids[1]) > spread


def test_perplexity_must_fit_the_number_of_points():
    assert default_perplexity(64) == pytest.approx(21.0) and default_perplexity(200) == 30.0
    vectors = np.random.default_rng(0).normal(size=(5, 4))
    with pytest.raises(InvalidInputError, match="perplexity must lie in"):
        tsne_embedding(vectors, perplexity=5)
    with pytest.raises(InvalidInputError, match="at least 2 points"):
        tsne_embedding(vectors[:1])
    embedded, used = tsne_embedding(vectors[:2])
    assert embedded.shape == (2, 2) and 0 < used < 2


def test_analyze_experts_writes_the_tsne_of_a_promptmoe_checkpoint_without_data(tiny_backbone, tmp_path):
    model = _promptmoe(tiny_backbone, num_experts=3, top_k=2)
    checkpoint = tmp_path / "promptmoe.safetensors"
    save_checkpoint(checkpoint, model.trainable_state_dict(), full_config(model))
    out = tmp_path / "out"
    arguments = ["analyze", "experts", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, [*arguments, "--tsne-seed", "7"])
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and "abnormal" in result.output
    with open(out / "expert_tsne.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    layers = len(model.prompt_blocks)
    assert len(rows) == layers * (3 + 3)
    assert list(rows[0]) == ["layer", "pool", "expert", "mean_token_norm", "x", "y"]
    reference = _slow_mean_tokens(model)
    for row in rows:
        token = reference[(row["layer"], row["pool"], int(row["expert"]))]
        assert float(row["mean_token_norm"]) == pytest.approx(np.linalg.norm(token), rel=1e-5)
    # The embedding is the library's, with the seed given.
    expected = expert_tsne(model.expert_prompts(), seed=7)
    np.testing.assert_allclose([[float(row["x"]), float(row["y"])] for row in rows], [[r["x"], r["y"]] for r in expected.rows], rtol=1e-6)
    summary = json.loads((out / "expert_tsne.json").read_text())
    assert summary["tsne"]["seed"] == 7 and summary["tsne"]["perplexity"] == pytest.approx((layers * 6 - 1) / 3)
    assert set(summary["abnormal_more_dispersed_than_normal"]) == {str(block) for block in model.prompt_blocks} | {"all"}
    with open(out / "expert_dispersion.csv", newline="") as handle:
        dispersion = list(csv.DictReader(handle))
    assert len(dispersion) == 2 * (layers + 1)
    assert (out / "expert_tsne.png").is_file()
    refused = CliRunner().invoke(app, arguments)
    assert refused.exit_code == 1 and "exists" in refused.output
    bad = CliRunner().invoke(app, [*arguments, "--overwrite", "--perplexity", "500"])
    assert bad.exit_code == 1 and "perplexity must lie in" in bad.output


def test_a_method_without_expert_prompts_says_why_there_is_no_tsne(tmp_path):
    arguments = [
        "analyze",
        "experts",
        "--method",
        "zeroshot",
        "--backbone",
        "zsad-tiny",
        "--weights",
        "random",
        "--image-size",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--quiet",
    ]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert "no expert prompts" in result.output and "--data" in result.output
    assert not (tmp_path / "out" / "expert_tsne.csv").exists()


def test_static_prompts_get_the_tsne_and_say_that_data_is_not_routed(tiny_backbone, tmp_path):
    model = _promptmoe(tiny_backbone, composition="averaged", num_experts=2, per_layer_prompts=False)
    checkpoint = tmp_path / "static.safetensors"
    save_checkpoint(checkpoint, model.trainable_state_dict(), full_config(model))
    generate_mvtec_like(tmp_path / "data", categories=["disc"], size=32, n_train=0, n_good=1, n_defect_per_kind=1)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "experts",
            "--checkpoint",
            str(checkpoint),
            "--data",
            f"mvtec:{tmp_path / 'data'}",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reports no routing (static prompts); --data is not used" in " ".join(result.output.split())
    with open(out / "expert_tsne.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 1 * (2 + 2)
    assert not (out / "expert_activation.csv").exists()
