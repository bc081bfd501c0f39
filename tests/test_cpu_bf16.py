"""bf16 autocast on the CPU: maps agree with fp32 (Pearson >= 0.99 per image, same peak)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.api import Predictor
from zsad.engine.runtime import autocast
from zsad.methods import build_method
from zsad.text import ClassNames


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def _peak_in_top_percent(reference: torch.Tensor, other: torch.Tensor, percent: float = 1.0) -> bool:
    """other's argmax lies among the reference map's top ``percent`` % pixels."""
    reference = reference.flatten().float()
    threshold = torch.quantile(reference, 1 - percent / 100)
    return bool(reference[other.flatten().float().argmax()] >= threshold)


@pytest.mark.parametrize("method", ["zeroshot", "moeclip"])
def test_cpu_bf16_maps_agree_with_fp32(tiny_backbone, method):
    torch.manual_seed(0)
    detector = build_method(method, tiny_backbone, {}).eval()
    if method == "moeclip":  # non-zero experts, so the MoE path matters
        for layer in detector.moe_layers:
            layer.experts.lora_b.data.normal_(0, 0.5)
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        fp32 = detector(images, ["bottle"] * 4)
        with autocast(torch.device("cpu"), "bf16"):
            bf16 = detector(images, ["bottle"] * 4)
    assert not torch.equal(fp32.anomaly_map, bf16.anomaly_map.float())  # autocast really ran
    for reference, other in zip(fp32.anomaly_map, bf16.anomaly_map):
        assert _pearson(reference, other) >= 0.99
        assert _peak_in_top_percent(reference, other)
    assert torch.allclose(fp32.pred_score, bf16.pred_score.float(), atol=0.02)


def test_predict_accepts_bf16_on_the_cpu(tiny_backbone):
    model = build_method("zeroshot", tiny_backbone, {})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    fp32 = Predictor(model, torch.device("cpu"), ClassNames.load()).predict([image])[0]
    bf16 = Predictor(model, torch.device("cpu"), ClassNames.load(), precision="bf16").predict([image])[0]
    assert bf16.anomaly_map.shape == (40, 50) and bf16.anomaly_map.dtype == np.float32
    assert _pearson(torch.from_numpy(fp32.anomaly_map), torch.from_numpy(bf16.anomaly_map)) >= 0.99


def test_bf16_is_refused_on_devices_without_autocast():
    with pytest.raises(ValueError, match="bf16"):
        autocast(torch.device("meta"), "bf16")
