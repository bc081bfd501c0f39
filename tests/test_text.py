"""Text side: class-name table, overrides, the prompt ensemble and its cached features."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from zsad.text import ClassNames, PromptEnsemble, TextFeatureBank, humanise_category


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
