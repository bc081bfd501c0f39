"""WMoE-CLIP building blocks: Haar transform, VAE (KL, sampling), frequency weighting,
cross-attention, SA-MoE router and experts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zsad.methods.wmoeclip.ctds import GlobalFeatureVAE, kl_divergence, reconstruction_loss
from zsad.methods.wmoeclip.haar import HaarBands, haar_dwt2d, haar_idwt2d, pad_to_even
from zsad.methods.wmoeclip.samoe import ContextAdapters, SemanticMoE
from zsad.methods.wmoeclip.wcma import FrequencyWeighting, WaveletCrossAttention

# ------------------------------------------------------------------ Haar


def test_haar_inverse_reconstructs_an_even_map_exactly():
    maps = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    bands = haar_dwt2d(maps)
    assert bands.ll.shape == (2, 5, 4, 3)
    assert torch.allclose(haar_idwt2d(bands), maps, atol=1e-12)


@pytest.mark.parametrize("height,width", [(7, 7), (5, 8), (8, 3), (37, 37), (1, 1)])
def test_haar_inverse_reconstructs_odd_sizes_after_cropping(height, width):
    maps = torch.randn(1, 3, height, width, dtype=torch.float64)
    bands = haar_dwt2d(maps)
    assert bands.hh.shape[-2:] == ((height + 1) // 2, (width + 1) // 2)
    restored = haar_idwt2d(bands)
    assert torch.allclose(restored, pad_to_even(maps), atol=1e-12)
    assert torch.allclose(restored[..., :height, :width], maps, atol=1e-12)


@pytest.mark.parametrize("height,width", [(8, 8), (6, 10), (7, 9), (37, 37)])
def test_haar_matches_pywavelets(height, width):
    pywt = pytest.importorskip("pywt", reason="PyWavelets is a dev dependency (pip install -e .[dev])")
    generator = np.random.default_rng(height * 100 + width)
    array = generator.standard_normal((2, 3, height, width))
    bands = haar_dwt2d(torch.from_numpy(array))
    approximation, (horizontal, vertical, diagonal) = pywt.dwt2(array, "haar", mode="symmetric", axes=(-2, -1))
    for ours, theirs in zip((bands.ll, bands.lh, bands.hl, bands.hh), (approximation, horizontal, vertical, diagonal)):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)


def test_haar_is_orthonormal_and_a_constant_map_has_no_detail():
    maps = torch.randn(1, 4, 10, 10, dtype=torch.float64)
    bands = haar_dwt2d(maps)
    energy = sum(band.pow(2).sum() for band in (bands.ll, bands.lh, bands.hl, bands.hh))
    assert torch.allclose(energy, maps.pow(2).sum())
    constant = haar_dwt2d(torch.full((1, 2, 7, 5), 3.0))  # odd: the padding repeats, no edge
    assert torch.count_nonzero(constant.high()) == 0
    assert torch.allclose(constant.ll, torch.full_like(constant.ll, 6.0))


def test_haar_rejects_a_map_without_channels():
    with pytest.raises(ValueError, match="B, C, H, W"):
        haar_dwt2d(torch.zeros(4, 4))


def test_high_band_is_the_sum_of_the_details():
    bands = HaarBands(*(torch.full((1, 1, 1, 1), float(v)) for v in (1, 2, 3, 4)))
    assert float(bands.high()) == 9.0


# ------------------------------------------------------------------ CTDS


def test_kl_is_zero_for_the_standard_normal_and_positive_otherwise():
    zeros = torch.zeros(3, 16)
    assert float(kl_divergence(zeros, zeros)) == 0.0
    assert float(kl_divergence(zeros + 0.5, zeros)) > 0
    assert float(kl_divergence(zeros, zeros - 0.5)) > 0
    assert float(kl_divergence(zeros, zeros + 0.5)) > 0


def test_kl_matches_torch_distributions():
    mu, log_var = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    posterior = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=-1).mean()
    assert torch.allclose(kl_divergence(mu, log_var), expected)


def test_vae_samples_in_training_and_uses_the_mean_at_inference():
    vae = GlobalFeatureVAE(feature_dim=12, latent_dim=6, decoder_hidden=10)
    g = torch.randn(3, 12)
    vae.eval()
    first, second = vae(g), vae(g)
    assert torch.equal(first.z, first.mu) and torch.equal(first.z, second.z)
    assert torch.equal(first.reconstruction, second.reconstruction)
    vae.train()
    torch.manual_seed(1)
    sampled = vae(g)
    resampled = vae(g)
    assert not torch.allclose(sampled.z, sampled.mu)
    assert not torch.allclose(sampled.z, resampled.z)
    assert torch.allclose(sampled.mu, first.mu)


def test_vae_sample_has_the_posterior_spread():
    vae = GlobalFeatureVAE(feature_dim=4, latent_dim=3, decoder_hidden=5).train()
    g = torch.randn(1, 4).expand(20000, 4)
    with torch.no_grad():
        sample = vae(g)
    std = (0.5 * sample.log_var[0]).exp()
    assert torch.allclose(sample.z.mean(dim=0), sample.mu[0], atol=4 * float(std.max()) / 100)
    assert torch.allclose(sample.z.std(dim=0), std, rtol=0.05)


def test_reconstruction_loss_is_the_mse_and_does_not_reach_the_target():
    g = torch.randn(2, 5, requires_grad=True)
    reconstruction = torch.randn(2, 5, requires_grad=True)
    loss = reconstruction_loss(reconstruction, g)
    assert torch.allclose(loss, ((reconstruction - g) ** 2).mean())
    loss.backward()
    assert g.grad is None and reconstruction.grad is not None


# ------------------------------------------------------------------ WCMA


def test_frequency_weighting_keeps_the_low_band_and_scales_the_high_band():
    weighting = FrequencyWeighting(channels=8, reduction=4)
    grid = torch.randn(2, 8, 6, 6)
    bands = haar_dwt2d(grid)
    with torch.no_grad():
        enhanced = weighting(grid)
    assert enhanced.shape == (2, 8, 3, 3)
    weight = (enhanced - bands.ll) / bands.high()
    assert float(weight.min()) > 0 and float(weight.max()) < 1  # a sigmoid gate
    smooth = torch.ones(1, 8, 6, 6)  # no high frequencies: F_w = LL
    assert torch.allclose(weighting(smooth), haar_dwt2d(smooth).ll)


def test_cross_attention_refines_text_from_patches_and_rejects_bad_heads():
    attention = WaveletCrossAttention(dim=16, heads=4, reduction=4)
    text = torch.randn(2, 2, 16)
    patches = torch.randn(2, 49, 16)
    refined = attention(text, patches)
    assert refined.shape == text.shape
    other = attention(text, torch.randn(2, 49, 16))
    assert not torch.allclose(refined, other)  # the image changes the text features
    with pytest.raises(ValueError, match="must divide"):
        WaveletCrossAttention(dim=16, heads=3)


# ------------------------------------------------------------------ SA-MoE


def test_router_keeps_two_experts_whose_weights_sum_to_one():
    moe = SemanticMoE(context_dim=12, output_dim=6, num_experts=8, top_k=2, hidden=10)
    with torch.no_grad():
        moe.router.gate.weight.normal_(0, 1)
    context = torch.randn(5, 12)
    mixed, routing = moe(context)
    assert routing.grid == (1, 1) and routing.num_experts == 8 and routing.top_k == 2  # one token per image
    index, weight = routing.topk_index[:, 0], routing.topk_weight[:, 0]  # (5, 2)
    assert torch.allclose(weight.sum(dim=-1), torch.ones(5))
    assert all(len(set(row.tolist())) == 2 for row in index)
    logits = moe.router.gate(context)
    kept = logits.gather(1, index)
    assert torch.allclose(weight, kept.softmax(dim=-1), atol=1e-6)  # softmax over the kept logits
    assert torch.equal(index[:, 0], logits.argmax(dim=-1))
    expected = torch.stack([sum(w * moe.experts[int(e)](context[b]) for e, w in zip(index[b], weight[b])) for b in range(5)])
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert routing.expert_outputs.shape == (5, 1, 8, 6)


def test_context_adapters_pool_each_layer_and_concatenate():
    adapters = ContextAdapters(width=8, adapter_dim=3, num_layers=2)
    first, second = torch.randn(2, 9, 8), torch.randn(2, 9, 8)
    context = adapters([first, second])
    assert context.shape == (2, 6)
    assert torch.allclose(context[:, :3], adapters.adapters[0](first).mean(dim=1))
    assert torch.allclose(context[:, 3:], adapters.adapters[1](second).mean(dim=1))
    with pytest.raises(ValueError, match="layers"):
        adapters([first])


# ------------------------------------------------------------------ prompts


def test_prompt_pair_with_word_tokens_encodes_the_sentences(tiny_backbone):
    from zsad.methods.wmoeclip.prompts import LearnablePromptPair

    pair = LearnablePromptPair(tiny_backbone.text_width, 2, "a photo of a good", "a photo of a damaged")
    words = [tiny_backbone.tokenizer.encode(word) for word in ("metal part", "glass cup")]
    assert all(len(ids) == 2 for ids in words)
    with torch.no_grad():
        for row, ids in enumerate(words):
            pair.tokens[row] = tiny_backbone.token_embeddings(torch.tensor(ids))
        features = pair(tiny_backbone, None)
        sentences = tiny_backbone.tokenize(["a photo of a good metal part", "a photo of a damaged glass cup"])
        expected = torch.nn.functional.normalize(tiny_backbone.encode_text(sentences), dim=-1)
        assert features.shape == (1, 2, tiny_backbone.embed_dim)
        assert torch.allclose(features[0], expected, atol=1e-5)
        shift = torch.zeros(3, tiny_backbone.text_width)
        shift[1] = torch.randn(tiny_backbone.text_width)  # not constant: LayerNorm removes a constant
        shifted = pair(tiny_backbone, shift)
    assert shifted.shape == (3, 2, tiny_backbone.embed_dim)
    assert torch.allclose(shifted[0], features[0], atol=1e-6) and torch.allclose(shifted[2], features[0], atol=1e-6)
    assert not torch.allclose(shifted[1], features[0], atol=1e-3)  # the shift moves both prompts of its image
    assert not torch.allclose(shifted[1, 1], features[0, 1], atol=1e-3)
