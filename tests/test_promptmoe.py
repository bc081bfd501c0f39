"""PromptMoE on the tiny backbone: routing (Eq. 3), auxiliary losses (Eq. 4, 5), prompt
structure (Eq. 1), maps and score (Eq. 6, 7), gradients, one step, checkpoints, ablations."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from zsad.checkpoints import save_checkpoint
from zsad.errors import RandomWeightsWarning
from zsad.methods import build_method
from zsad.methods.build import build_detector, full_config
from zsad.methods.promptmoe.aux_losses import balance_loss, decoupling_loss
from zsad.methods.promptmoe.config import PromptMoEConfig
from zsad.methods.promptmoe.vgmop import ExpertPool, sparse_routing
from zsad.text import build_learned_prompts, encode_learned_prompts, fill_prompt_layout, prompt_layout


def _batch(size=64):
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, size, size, generator=generator)
    masks = torch.zeros(2, 1, size, size)
    masks[0, :, 10:30, 20:40] = 1
    return images, masks, torch.tensor([1, 0])


def _model(tiny_backbone, **overrides):
    torch.manual_seed(0)
    return build_method("promptmoe", tiny_backbone, overrides)


# ------------------------------------------------------------------ routing and losses


@pytest.mark.parametrize("experts, k", [(8, 4), (8, 1), (5, 5), (1, 1)])
def test_routing_keeps_exactly_k_experts_with_weights_summing_to_one(experts, k):
    logits = torch.randn(6, experts, generator=torch.Generator().manual_seed(experts + k))
    routing = sparse_routing(logits, k)
    weights = routing.dense_weights()
    assert ((weights > 0).sum(dim=1) == k).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(6))
    # The kept experts are the k largest logits, weighted by a softmax over them.
    assert torch.equal(routing.topk_index.sort(dim=1).values, logits.topk(k, dim=1).indices.sort(dim=1).values)
    assert torch.allclose(routing.topk_weight, logits.gather(1, routing.topk_index).softmax(dim=1))
    assert torch.allclose(routing.probabilities, logits.softmax(dim=1))
    with pytest.raises(ValueError, match="top_k"):
        sparse_routing(logits, experts + 1)


def test_mixture_is_the_weighted_sum_of_the_kept_experts():
    pool = ExpertPool(num_experts=6, length=3, token_dim=4, init_std=1.0, top_k=2, router_hidden=8)
    routing = pool.route(torch.randn(5, 4))
    mixed = pool.mix(routing)
    for row in range(5):
        expected = sum(w * pool.experts[i] for i, w in zip(routing.topk_index[row], routing.topk_weight[row]))
        assert torch.allclose(mixed[row], expected, atol=1e-6)


def test_decoupling_loss_is_zero_for_orthonormal_expert_means_and_positive_otherwise():
    orthonormal, _ = torch.linalg.qr(torch.randn(16, 8, dtype=torch.float64))
    assert decoupling_loss(orthonormal.T.float()) == pytest.approx(0.0, abs=1e-10)
    # Through the pool: expert tokens whose means are orthonormal directions (any scale).
    pool = ExpertPool(num_experts=8, length=3, token_dim=16, init_std=1.0)
    with torch.no_grad():
        pool.experts.copy_(3.0 * orthonormal.T.float().unsqueeze(1).expand(-1, 3, -1))
    assert float(decoupling_loss(pool.mean_directions()).detach()) == pytest.approx(0.0, abs=1e-6)
    skewed = orthonormal.T.float().clone()
    skewed[1] = F.normalize(skewed[0] + 0.1 * skewed[1], dim=0)
    assert decoupling_loss(skewed) > 0
    assert decoupling_loss(F.normalize(torch.ones(3, 4), dim=-1)) == pytest.approx(6.0)  # 6 off-diagonal ones


def test_balance_loss_is_minimal_at_uniform_routing():
    experts = 8
    uniform = torch.full((4, experts), 1 / experts)
    assert balance_loss(uniform) == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert balance_loss(torch.randn(4, experts, generator=generator).softmax(dim=1)) > 1.0
    collapsed = F.one_hot(torch.zeros(4, dtype=torch.long), experts).float()
    assert balance_loss(collapsed) == pytest.approx(experts)
    # Images routed to different experts can balance each other out in the batch mean.
    assert balance_loss(F.one_hot(torch.arange(experts), experts).float()) == pytest.approx(1.0)


# ------------------------------------------------------------------ prompts and text passes


def test_prompts_follow_eq_1_and_use_one_text_encoder_call(tiny_backbone, monkeypatch):
    model = _model(tiny_backbone).eval()
    images, _, _ = _batch()
    built, calls = [], []
    original_build, original_encode = build_learned_prompts, tiny_backbone.encode_text_embeddings

    def recording_fill(backbone, layout, prefix=None, suffix=None):
        built.append((layout, prefix.detach().clone(), suffix.detach().clone()))
        return fill_prompt_layout(backbone, layout, prefix, suffix)

    monkeypatch.setattr("zsad.methods.promptmoe.model.fill_prompt_layout", recording_fill)
    monkeypatch.setattr(tiny_backbone, "encode_text_embeddings", lambda *a: calls.append(1) or original_encode(*a))
    with torch.no_grad():
        patches, global_feature = model.visual_features(images)
        contexts = [torch.cat([patches[b], global_feature.unsqueeze(1)], dim=1) for b in model.prompt_blocks]
        states = [module(context) for module, context in zip(model.prompt_modules, contexts)]
        output = model(images, ["bottle", "screw"])
    assert len(calls) == model.text_encoder_calls_per_batch == 1
    (normal_layout, normal_prefix, normal_suffix), (abnormal_layout, abnormal_prefix, _) = built
    layers = len(model.taps)
    names, config = ["bottle", "screw"] * layers, model.config
    for layout, learned in ((normal_layout, config.normal_length), (abnormal_layout, config.normal_length + config.abnormal_length)):
        expected_layout = prompt_layout(tiny_backbone, names, learned, config.context_length)
        assert all(torch.equal(part, expected) for part, expected in zip(layout, expected_layout))
    assert torch.allclose(normal_prefix, torch.cat([s.normal for s in states]))  # [S_agg^n]
    assert torch.allclose(abnormal_prefix, torch.cat([torch.cat([s.normal, s.abnormal], 1) for s in states]))
    assert torch.allclose(normal_suffix, model.context.expand(2 * layers, -1, -1))  # [Q_ctx] shared
    assert set(output.routing) == {f"{b}/{pool}" for b in model.taps for pool in ("normal", "abnormal")}
    routing = output.routing[f"{model.taps[0]}/abnormal"]  # one decision per image
    assert routing.grid == (1, 1) and routing.topk_index.shape == (2, 1, 4) and routing.probabilities.shape == (2, 1, 8)
    # Each image and layer gets the features of its own prompts: check layer 3, image 2.
    with torch.no_grad():
        text, _ = model.text_features(patches, global_feature, ["bottle", "screw"])
        prefixes = (states[2].normal[1:], torch.cat([states[2].normal[1:], states[2].abnormal[1:]], dim=1))
        expected = [
            encode_learned_prompts(tiny_backbone, original_build(tiny_backbone, ["screw"], prefix, model.context[None]))[0]
            for prefix in prefixes
        ]
    assert torch.allclose(text[2][1], torch.stack(expected), atol=1e-5)


def test_static_ensemble_averages_the_expert_prompt_features(tiny_backbone, monkeypatch):
    model = _model(tiny_backbone, composition="averaged", per_layer_prompts=False, num_experts=3).eval()
    calls, original_encode = [], tiny_backbone.encode_text_embeddings
    monkeypatch.setattr(tiny_backbone, "encode_text_embeddings", lambda *a: calls.append(1) or original_encode(*a))
    with torch.no_grad():
        text, routing = model.text_features({}, torch.zeros(2, 1), ["bottle", "screw"])
        assert len(calls) == model.text_encoder_calls_per_batch
        pools = model.prompt_modules[0].pools
        normal = pools["normal"].experts
        abnormal = torch.cat([normal, pools["abnormal"].experts], dim=1)
        context = model.context.expand(3, -1, -1)
        expected = [
            F.normalize(
                encode_learned_prompts(tiny_backbone, build_learned_prompts(tiny_backbone, ["screw"] * 3, p, context)).mean(0), dim=-1
            )
            for p in (normal, abnormal)
        ]
    assert routing == {} and len(text) == 1 and text[0].shape == (2, 2, tiny_backbone.embed_dim)
    assert torch.allclose(text[0][1], torch.stack(expected), atol=1e-5)


# ------------------------------------------------------------------ maps, score, losses


def test_map_and_score_follow_eq_6_and_7(tiny_backbone):
    model = _model(tiny_backbone, smoothing_sigma=0.0).eval()
    images, _, _ = _batch()
    with torch.no_grad():
        output = model(images, ["bottle", "bottle"])
        patches, global_feature = model.visual_features(images)
        text, _ = model.text_features(patches, global_feature, ["bottle", "bottle"])
        maps = []
        for block, pair in zip(model.taps, text):
            similarity = torch.einsum("bld,bcd->bcl", patches[block], pair).reshape(2, 2, 8, 8)
            up = F.interpolate(similarity, size=64, mode="bilinear", align_corners=False)
            maps.append((up / 0.07).softmax(dim=1)[:, 1])
        expected_map = torch.stack(maps).mean(0)
        global_prob = (torch.einsum("bd,bcd->bc", global_feature, text[-1]) / 0.01).softmax(-1)[:, 1]
    assert torch.allclose(output.anomaly_map, expected_map, atol=1e-5)
    assert torch.allclose(output.pred_score, 0.5 * (expected_map.flatten(1).amax(1) + global_prob), atol=1e-5)
    assert output.losses == {}


def test_image_temperature_is_the_papers_tau_prime():
    # App. A: tau = 0.07 for the maps, tau' = 0.01 for the image branch; a cosine gap of
    # 0.02 is then an image probability of 0.88 (0.57 at 0.07).
    config = PromptMoEConfig()
    assert (config.map_temperature, config.score_temperature) == (0.07, 0.01)
    gap = torch.tensor([0.0, 0.02])
    assert float((gap / config.score_temperature).softmax(-1)[1]) == pytest.approx(0.881, abs=1e-3)


def test_training_losses_are_named_finite_and_skip_unknown_targets(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 2, masks=masks, labels=labels)
    assert set(output.losses) == {"bce", "focal", "dice", "balance", "decouple"}
    assert set(output.monitors) == {"balance_unweighted", "decouple_unweighted"}
    assert float(output.losses["balance"].detach()) == pytest.approx(0.01 * float(output.monitors["balance_unweighted"]))
    assert float(output.losses["decouple"].detach()) == pytest.approx(0.005 * float(output.monitors["decouple_unweighted"]))
    assert all(torch.isfinite(value) for value in output.losses.values())
    masks[1] = -1
    full = model(images[:1], ["bottle"], masks=masks[:1], labels=labels[:1]).losses
    partial = model(images, ["bottle"] * 2, masks=masks, labels=torch.tensor([1, -1])).losses
    for name in ("bce", "focal", "dice"):
        assert torch.allclose(partial[name], full[name], atol=1e-5), name


def test_learned_tokens_get_gradients_and_neither_encoder_does(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, masks, labels = _batch()
    output = model(images, ["bottle", "screw"], masks=masks, labels=labels)
    sum(output.losses.values()).backward()
    for name, parameter in model.named_parameters():
        if name.startswith("backbone."):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.context.grad.abs().sum() > 0
    assert all(module.pools["abnormal"].experts.grad.abs().sum() > 0 for module in model.prompt_modules)


def test_one_adam_step_lowers_the_loss_on_a_fixed_batch(tiny_backbone):
    model = _model(tiny_backbone).train()
    images, masks, labels = _batch()

    def total():
        return sum(model(images, ["bottle"] * 2, masks=masks, labels=labels).losses.values())

    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = total()
    first.backward()
    optimiser.step()
    assert total() < first


def test_checkpoint_round_trip_gives_equal_outputs(tiny_backbone, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        torch.manual_seed(5)
        detector = build_detector("promptmoe", backbone="zsad-tiny", weights="random", image_size=64, for_training=True)
        path = tmp_path / "promptmoe.safetensors"
        save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
        rebuilt = build_detector(checkpoint=path)
    images, _, _ = _batch()
    rebuilt.backbone.load_state_dict(detector.backbone.state_dict())  # the backbone is random, not saved
    with torch.no_grad():
        before, after = detector.eval()(images, ["bottle"] * 2), rebuilt.eval()(images, ["bottle"] * 2)
    assert isinstance(rebuilt, type(detector)) and rebuilt.config == detector.config
    assert torch.equal(before.anomaly_map, after.anomaly_map) and torch.equal(before.pred_score, after.pred_score)


# ------------------------------------------------------------------ ablations and config


@pytest.mark.parametrize(
    "overrides, modules, losses",
    [
        ({}, 4, {"balance", "decouple"}),
        ({"per_layer_prompts": False}, 1, {"balance", "decouple"}),
        ({"composition": "averaged", "num_experts": 1, "top_k": 1, "per_layer_prompts": False}, 1, {"decouple"}),
        ({"composition": "averaged", "per_layer_prompts": False, "decouple_weight": 0.0}, 1, set()),
        ({"balance_weight": 0.0, "decouple_weight": 0.0}, 4, set()),
        ({"taps": [2, 4], "context_length": 0, "use_class_names": False}, 2, {"balance", "decouple"}),
    ],
)
def test_every_ablation_builds_and_trains(tiny_backbone, overrides, modules, losses):
    model = _model(tiny_backbone, **overrides).train()
    images, masks, labels = _batch()
    output = model(images, ["bottle"] * 2, masks=masks, labels=labels)
    assert len(model.prompt_modules) == modules
    assert set(output.losses) == {"bce", "focal", "dice"} | losses
    sum(output.losses.values()).backward()
    assert output.anomaly_map.shape == (2, 64, 64) and ((0 <= output.pred_score) & (output.pred_score <= 1)).all()


def test_config_validation():
    with pytest.raises(ValueError, match="composition"):
        PromptMoEConfig(composition="dense")
    with pytest.raises(ValueError, match="top_k"):
        PromptMoEConfig(top_k=9)
    with pytest.raises(ValueError, match="map_temperature"):
        PromptMoEConfig(map_temperature=0)
    with pytest.raises(ValueError, match="balance_weight"):
        PromptMoEConfig(balance_weight=-1)
    with pytest.raises(ValueError, match="unknown PromptMoEConfig fields"):
        PromptMoEConfig.from_dict({"experts": 4})


def test_attention_heads_must_divide_the_token_width(tiny_backbone):
    with pytest.raises(ValueError, match="not divisible by 5 attention heads"):
        _model(tiny_backbone, attention_heads=5)


def test_bf16_autocast_keeps_maps_scores_and_losses_in_float32(tiny_backbone):
    model = _model(tiny_backbone).eval()
    images, masks, labels = _batch()
    with torch.no_grad():
        reference = model(images, ["bottle", "screw"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images, ["bottle", "screw"])
    assert mixed.anomaly_map.dtype == mixed.pred_score.dtype == torch.float32
    assert torch.allclose(mixed.anomaly_map, reference.anomaly_map, atol=0.05)
    assert torch.allclose(mixed.pred_score, reference.pred_score, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(images, ["bottle", "screw"], masks=masks, labels=labels).losses
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())
