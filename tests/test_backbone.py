"""Backbone: weight formats, positional-embedding interpolation, taps, in-stream
modules, the V-V path, freezing and the hub-failure message."""
from __future__ import annotations

from types import SimpleNamespace

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from zsad import backbone as backbone_module
from zsad.backbone import BackboneConfig, create_backbone, interpolate_pos_embed
from zsad.clip_weights import WeightsUnavailableError, read_weight_file, register_bundled_model_configs
from zsad.errors import RandomWeightsWarning


def _reference_clip(seed: int = 7):
    register_bundled_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model("zsad-tiny", pretrained=None, force_quick_gelu=True).eval()


def _write_openai_jit_archive(model, path):
    """An archive in the OpenAI format: a TorchScript module whose state dict carries the
    CLIP weights plus OpenAI's extra 'input_resolution' entry."""
    model.register_buffer("input_resolution", torch.tensor(64))
    traced = torch.jit.trace_module(model, {"encode_image": torch.randn(1, 3, 64, 64)}, check_trace=False)
    traced.save(str(path))
    del model._buffers["input_resolution"]


@pytest.mark.parametrize("suffix", [".jit.pt", ".pt", ".bin", ".safetensors"])
def test_local_weight_files_load_through_the_user_path(tmp_path, suffix):
    reference = _reference_clip()
    path = tmp_path / f"weights{suffix}"
    state = reference.state_dict()
    if suffix == ".jit.pt":
        _write_openai_jit_archive(reference, path)
    elif suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif suffix == ".bin":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    loaded = create_backbone(model_name="zsad-tiny", weights=str(path), image_size=64)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value), key
    assert loaded.weights_description == str(path)
    images = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.forward_visual(images).image_embedding, reference.encode_image(images), atol=1e-5)


def test_weight_file_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    register_bundled_model_configs()
    torch.save(open_clip.create_model("zsad-tiny").visual.state_dict(), path)  # visual tower only
    with pytest.raises(WeightsUnavailableError, match="do not fit.*zsad-tiny"):
        create_backbone(model_name="zsad-tiny", weights=str(path))


def test_corrupt_and_missing_weight_files(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read CLIP weights"):
        read_weight_file(broken)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_backbone(model_name="zsad-tiny", weights=str(tmp_path / "missing.pt"))


def test_hub_failure_tells_the_user_to_pass_a_file(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_network)
    with pytest.raises(WeightsUnavailableError) as caught:
        create_backbone(BackboneConfig(model_name="ViT-B-32", weights="openai"))
    message = str(caught.value)
    assert "--weights PATH" in message and "network" in message


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(WeightsUnavailableError, match="known tags: .*openai"):
        create_backbone(model_name="ViT-B-32", weights="no-such-tag")


def test_random_weights_warn_loudly():
    with pytest.warns(RandomWeightsWarning, match="RANDOM WEIGHTS"):
        model = create_backbone(model_name="zsad-tiny", weights="random")
    assert model.describe()["random_weights"] is True


def test_interpolated_position_embedding_is_identity_at_the_original_grid():
    pos = torch.randn(1 + 8 * 8, 16)
    assert torch.allclose(interpolate_pos_embed(pos, (8, 8)), pos, atol=1e-6)
    resized = interpolate_pos_embed(pos, (12, 12))
    assert resized.shape == (1 + 144, 16)
    assert torch.equal(resized[0], pos[0])  # class position untouched


@pytest.mark.parametrize("old, new", [(24, 37), (8, 12), (12, 8)])
def test_position_embedding_resize_is_openclips_own(old, new):
    # OpenCLIP resizes a state dict's grid with its resize_pos_embed (bicubic, antialias);
    # zsad must give the same embedding, to the last bit, when enlarging and shrinking.
    from open_clip.model import resize_pos_embed

    pos = torch.randn(1 + old * old, 16, generator=torch.Generator().manual_seed(old))
    target = SimpleNamespace(visual=SimpleNamespace(grid_size=(new, new)))
    state = {"visual.positional_embedding": pos.clone()}
    resize_pos_embed(state, target)
    assert torch.equal(interpolate_pos_embed(pos, (new, new)), state["visual.positional_embedding"])


def test_image_size_resizes_the_grid_and_default_is_518_for_vit_l(tiny_backbone):
    larger = create_backbone(model_name="zsad-tiny", weights="random", image_size=96)
    assert larger.grid == (12, 12)
    assert larger.clip.visual.positional_embedding.shape[0] == 1 + 144
    assert backbone_module._DEFAULT_IMAGE_SIZES["ViT-L-14-336"] == 518
    with pytest.raises(ValueError, match="smaller than the patch size 8"):
        create_backbone(model_name="zsad-tiny", weights="random", image_size=7)


def test_a_size_that_is_not_a_multiple_of_the_patch_is_resampled_to_the_grid():
    odd = create_backbone(model_name="zsad-tiny", weights="random", image_size=100)  # patch 8
    assert odd.grid == (12, 12) and odd.patched_size == 96
    images = torch.randn(2, 3, 100, 100)
    fitted = odd.fit_to_patch_grid(images)
    assert fitted.shape == (2, 3, 96, 96)
    # the whole image is kept: a constant right/bottom strip survives the resampling
    images[..., 96:] = 5.0
    assert odd.fit_to_patch_grid(images)[..., -1].mean() > 4.0
    features = odd.forward_visual(images)
    assert features.hidden[4].shape == (2, 1 + 144, odd.width) and features.grid == (12, 12)
    same = create_backbone(model_name="zsad-tiny", weights="random", image_size=96)
    aligned = torch.randn(1, 3, 96, 96)
    assert same.fit_to_patch_grid(aligned) is aligned  # a multiple of the patch is left as it is


def _clip_state(backbone):
    return {key: value.clone() for key, value in backbone.clip.state_dict().items()}


def test_random_weights_depend_only_on_the_model_and_the_seed():
    torch.manual_seed(1)
    first = _clip_state(create_backbone(model_name="zsad-tiny", weights="random"))
    torch.manual_seed(2)
    torch.randn(1000)  # whatever ran before must not matter
    create_backbone(model_name="zsad-tiny", weights="random:5")
    second = create_backbone(model_name="zsad-tiny", weights="random:0")
    assert second.weights_description == "random:0" and second.config.weights == "random:0"
    for key, value in first.items():
        assert torch.equal(second.clip.state_dict()[key], value), key
    other = create_backbone(model_name="zsad-tiny", weights="random:1").clip.state_dict()
    assert not torch.equal(other["visual.conv1.weight"], first["visual.conv1.weight"])


def test_building_a_random_backbone_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    create_backbone(model_name="zsad-tiny", weights="random:2")
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("weights", ["random:", "random:-1", "random:x"])
def test_a_malformed_random_seed_is_a_clear_error(weights):
    with pytest.raises(WeightsUnavailableError, match=r"random:SEED"):
        create_backbone(model_name="zsad-tiny", weights=weights)


def test_taps_equal_a_plain_openclip_forward(tiny_backbone):
    images = torch.randn(2, 3, 64, 64)
    features = tiny_backbone.forward_visual(images, taps=(1, 2, 3, 4))
    visual = tiny_backbone.clip.visual
    with torch.no_grad():
        x = visual._embeds(images)
        expected = []
        for block in visual.transformer.resblocks:
            x = block(x)
            expected.append(x)
    for index in (1, 2, 3, 4):
        assert torch.allclose(features.hidden[index], expected[index - 1], atol=1e-6)
    assert torch.allclose(features.image_embedding, tiny_backbone.clip.encode_image(images), atol=1e-5)
    assert features.vv_hidden == {}


def test_default_taps_are_quarters_of_the_depth(tiny_backbone):
    assert tiny_backbone.default_taps() == (1, 2, 3, 4)
    assert tiny_backbone.default_vv_start() == 3


def test_in_stream_module_replaces_the_hidden_state(tiny_backbone):
    images = torch.randn(1, 3, 64, 64)
    plain = tiny_backbone.forward_visual(images)
    doubled = tiny_backbone.forward_visual(images, stream_modules={2: lambda h: 2 * h})
    assert torch.allclose(doubled.hidden[2], 2 * plain.hidden[2], atol=1e-5)
    assert torch.allclose(doubled.hidden[1], plain.hidden[1])
    assert not torch.allclose(doubled.hidden[3], plain.hidden[3])


def test_vv_stream_follows_its_definition(tiny_backbone):
    images = torch.randn(1, 3, 64, 64)
    features = tiny_backbone.forward_visual(images, taps=(2, 3, 4), vv_start=3)
    plain = tiny_backbone.forward_visual(images, taps=(2, 3, 4))
    assert set(features.vv_hidden) == {3, 4}
    for block in (2, 3, 4):  # the main stream is untouched by the V-V path
        assert torch.allclose(features.hidden[block], plain.hidden[block])
    # Reference: y starts at block 3's input; y += out_proj(softmax(V V^T / sqrt(dh)) V), V from ln_1(x).
    blocks = tiny_backbone.clip.visual.transformer.resblocks
    x = plain.hidden[2]
    y = x.clone()
    for index in (3, 4):
        attention = blocks[index - 1].attn
        d, heads = x.shape[-1], attention.num_heads
        v = blocks[index - 1].ln_1(x) @ attention.in_proj_weight[2 * d :].t() + attention.in_proj_bias[2 * d :]
        v = v.reshape(1, -1, heads, d // heads).transpose(1, 2)
        weights = torch.softmax(v @ v.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(1, -1, d)
        y = y + attention.out_proj(mixed)
        assert torch.allclose(features.vv_hidden[index], y, atol=1e-5)
        x = plain.hidden[index]
    assert torch.equal(features.patch_tokens(4), features.vv_hidden[4][:, 1:])
    assert torch.equal(features.patch_tokens(2), plain.hidden[2][:, 1:])


def test_clip_is_frozen_and_receives_no_gradient(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    scale = torch.nn.Parameter(torch.ones(()))
    features = tiny_backbone.forward_visual(torch.randn(1, 3, 64, 64), stream_modules={2: lambda h: h * scale})
    features.hidden[4].sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    assert all(p.grad is None for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.clip.training


def test_blocks_before_the_first_stream_module_run_without_autograd(tiny_backbone):
    seen = {}

    def spy(hidden):
        seen["requires_grad"] = hidden.requires_grad
        return hidden

    tiny_backbone.forward_visual(torch.randn(1, 3, 64, 64), stream_modules={3: spy})
    assert seen["requires_grad"] is False


def test_activation_checkpointing_gives_the_same_gradients(tiny_backbone):
    images = torch.randn(1, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        scale = torch.nn.Parameter(torch.ones(()))
        features = tiny_backbone.forward_visual(
            images, stream_modules={1: lambda h: h * scale}, checkpoint_frozen_blocks=checkpointing
        )
        features.hidden[4].pow(2).mean().backward()
        grads.append(scale.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-5)


def test_wrong_input_size_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match="expects 64 x 64"):
        tiny_backbone.forward_visual(torch.randn(1, 3, 32, 32))


def test_text_encoding_from_embeddings_matches_token_ids(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a bottle.", "broken screw"])
    direct = tiny_backbone.encode_text(tokens)
    eot = tokens.argmax(dim=-1)  # the EOT id is the largest token id
    via_embeddings = tiny_backbone.encode_text_embeddings(tiny_backbone.token_embeddings(tokens), eot)
    assert torch.allclose(direct, via_embeddings, atol=1e-5)


def test_backbone_config_is_resolved_to_a_concrete_image_size():
    import warnings

    from zsad.backbone import create_backbone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        backbone = create_backbone(model_name="zsad-tiny", weights="random")  # no image size given
    assert isinstance(backbone.config.image_size, int) and backbone.config.image_size == backbone.image_size


def test_fused_causal_text_path_matches_openclip_and_runs_under_bf16(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a flawless bottle.", "scratch"])
    embeddings, eot = tiny_backbone.token_embeddings(tokens), tokens.argmax(dim=-1)
    with torch.no_grad():
        fused = tiny_backbone.encode_text_embeddings(embeddings, eot)
        tiny_backbone.fused_attention = False
        try:
            reference = tiny_backbone.encode_text_embeddings(embeddings, eot)  # OpenCLIP's forward + float mask
        finally:
            tiny_backbone.fused_attention = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_backbone.encode_text_embeddings(embeddings, eot)
    assert torch.allclose(fused, reference, atol=1e-5)
    assert torch.nn.functional.cosine_similarity(low.float(), reference, dim=-1).min() > 0.99


def test_a_causal_block_ignores_later_tokens(tiny_backbone):
    from zsad.vit_blocks import run_block

    block = tiny_backbone.clip.transformer.resblocks[0]
    x = torch.randn(1, 6, tiny_backbone.clip.transformer.width)
    later_changed = x.clone()
    later_changed[:, 4:] += 5.0
    with torch.no_grad():
        out, _ = run_block(block, x, with_vv=False, causal=True)
        out_changed, _ = run_block(block, later_changed, with_vv=False, causal=True)
        plain, _ = run_block(block, x, with_vv=False)
    assert torch.allclose(out[:, :4], out_changed[:, :4], atol=1e-6)  # tokens 0..3 never see 4, 5
    assert not torch.allclose(out[:, 4:], out_changed[:, 4:])
    assert not torch.allclose(out[:, :4], plain[:, :4])  # without the mask they would
    with pytest.raises(ValueError, match="causal block needs the fused path"):
        run_block(block, x, with_vv=False, fused=False, causal=True)
