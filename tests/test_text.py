"""Text side: class-name table, overrides, the prompt ensemble and its cached features."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from zsad.text import (
    ClassNames,
    PromptEnsemble,
    TextFeatureBank,
    build_learned_prompts,
    encode_learned_prompts,
    humanise_category,
)


def test_table_names_and_fallbacks():
    names = ClassNames.load()
    assert names.resolve("metal_nut") == "metal nut"
    assert names.resolve("headct") == "head CT scan"
    assert names.resolve("Woven_068") == "woven"  # DTD-Synthetic style keys
    assert names.resolve("my-part") == "my part"
    assert names.resolve("07") == "object"
    assert names.resolve(None) == "object"
    assert humanise_category("___") == "object"


def test_user_file_and_override(tmp_path):
    mapping = tmp_path / "names.yaml"
    mapping.write_text("metal_nut: hex nut\nwidget: blue widget\n")
    names = ClassNames.load(mapping)
    assert names.resolve("metal_nut") == "hex nut" and names.resolve("widget") == "blue widget"
    assert ClassNames.load(override=" chest x-ray ").resolve("metal_nut") == "chest x-ray"
    with pytest.raises(ValueError, match="must not be empty"):
        ClassNames.load(override="  ")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": 3}))
    with pytest.raises(ValueError, match="must map category keys"):
        ClassNames.load(bad)
    with pytest.raises(FileNotFoundError):
        ClassNames.load(tmp_path / "missing.json")


def test_prompt_ensemble_is_the_spec_table():
    ensemble = PromptEnsemble.default()
    normal = ensemble.sentences("bottle", abnormal=False)
    abnormal = ensemble.sentences("bottle", abnormal=True)
    assert [len(state) for state in normal] == [2, 2, 2]
    assert len(abnormal) == 5
    assert "a photo of a bottle with damage." in abnormal[0]
    assert "a photo of the broken bottle." in abnormal[4]


def test_text_features_are_the_normalised_group_means_and_cached(tiny_backbone):
    bank = TextFeatureBank()
    features = bank.features(tiny_backbone, ["bottle", "screw", "bottle"])
    assert features.shape == (3, 2, tiny_backbone.embed_dim)
    assert torch.allclose(features.norm(dim=-1), torch.ones(3, 2), atol=1e-5)
    assert torch.equal(features[0], features[2])
    # Reference for the abnormal group of "screw".
    sentences = [s for state in bank.ensemble.sentences("screw", True) for s in state]
    encoded = F.normalize(tiny_backbone.encode_text(tiny_backbone.tokenize(sentences)), dim=-1)
    assert torch.allclose(features[1, 1], F.normalize(encoded.mean(0), dim=-1), atol=1e-5)
    calls = []
    original = tiny_backbone.encode_text
    tiny_backbone.encode_text = lambda tokens: calls.append(1) or original(tokens)
    try:
        bank.features(tiny_backbone, ["screw"])
    finally:
        del tiny_backbone.encode_text
    assert calls == []  # cached: no new encoding
    assert bank.names == ["bottle", "screw"]


def _embedded_words(backbone, text: str, copies: int) -> torch.Tensor:
    """(copies, n, d_text) token embeddings of ``text`` without SOT/EOT."""
    ids = torch.tensor(backbone.tokenizer.encode(text), dtype=torch.long)
    return backbone.token_embeddings(ids).unsqueeze(0).expand(copies, -1, -1)


def test_learned_prompts_from_sentence_embeddings_reproduce_the_plain_text_feature(tiny_backbone):
    sentences = ["a photo of a bottle.", "a photo of a metal nut."]
    tokenizer = tiny_backbone.tokenizer
    # The sentence splits into [prefix][class name][suffix] in token space.
    for name in ("bottle", "metal nut"):
        sentence = f"a photo of a {name}."
        assert tokenizer.encode(sentence) == tokenizer.encode("a photo of a") + tokenizer.encode(name) + tokenizer.encode(".")
    prompts = build_learned_prompts(
        tiny_backbone,
        ["bottle", "metal nut"],
        prefix=_embedded_words(tiny_backbone, "a photo of a", 2),
        suffix=_embedded_words(tiny_backbone, ".", 2),
    )
    tokens = tiny_backbone.tokenize(sentences)
    assert torch.equal(prompts.eot_index, tokens.argmax(dim=-1))
    assert torch.allclose(prompts.embeddings, tiny_backbone.token_embeddings(tokens))
    plain = F.normalize(tiny_backbone.encode_text(tokens), dim=-1)
    assert torch.allclose(encode_learned_prompts(tiny_backbone, prompts), plain, atol=1e-5)


def test_learned_prompts_with_an_empty_side(tiny_backbone):
    sentence = "a photo of a bottle"
    plain = F.normalize(tiny_backbone.encode_text(tiny_backbone.tokenize([sentence])), dim=-1)
    only_prefix = build_learned_prompts(tiny_backbone, ["bottle"], prefix=_embedded_words(tiny_backbone, "a photo of a", 1))
    only_suffix = build_learned_prompts(tiny_backbone, [""], suffix=_embedded_words(tiny_backbone, sentence, 1))
    for prompts in (only_prefix, only_suffix):
        assert prompts.eot_index.tolist() == [len(tiny_backbone.tokenizer.encode(sentence)) + 1]
        assert torch.allclose(encode_learned_prompts(tiny_backbone, prompts), plain, atol=1e-5)


def test_learned_tokens_get_gradients_and_the_text_encoder_none(tiny_backbone):
    width = tiny_backbone.text_width
    prefix = torch.randn(3, 4, width, requires_grad=True)
    suffix = torch.randn(3, 2, width, requires_grad=True)
    prompts = build_learned_prompts(tiny_backbone, ["bottle", "screw", "metal nut"], prefix, suffix)
    assert prompts.embeddings.shape == (3, tiny_backbone.context_length, width)
    encode_learned_prompts(tiny_backbone, prompts).sum().backward()
    assert prefix.grad.abs().sum() > 0 and suffix.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_learned_prompts_refuse_bad_shapes_and_overlong_prompts(tiny_backbone):
    width = tiny_backbone.text_width
    with pytest.raises(ValueError, match="prefix tokens must be"):
        build_learned_prompts(tiny_backbone, ["bottle"], prefix=torch.zeros(2, 3, width))
    with pytest.raises(ValueError, match="the text encoder holds 77"):
        build_learned_prompts(tiny_backbone, ["bottle"], suffix=torch.zeros(1, 75, width))


def test_tokenizer_is_built_once_per_backbone(tiny_backbone):
    assert tiny_backbone.tokenizer is tiny_backbone.tokenizer
