"""Parameter counts of every method on ViT-L-14-336 at 518 px, beside the papers' totals.

    python benchmarks/parameter_counts.py

The models are built on PyTorch's ``meta`` device (shapes only: no weights, no memory, a few
seconds), so the counts are exact and nothing is downloaded. Columns, in millions:
backbone (the frozen CLIP, its positional embedding resized to the 37 x 37 grid), trainable
(the method's own parameters), frozen buffers (the method's saved non-trainable tensors,
e.g. MoECLIP's FOFS projections A), total = all three, and the paper's published total
(only MoECLIP's Tab. 13 gives one).
"""
from __future__ import annotations

import logging

import open_clip
import torch

from zsad.backbone import BackboneConfig, ClipBackbone
from zsad.methods import build_method

MODEL = "ViT-L-14-336"
SIZE = 518
# (label, method, config overrides, the paper's total in millions or None)
ROWS = [
    ("moeclip (paper recipe, text adapter on)", "moeclip", {}, 433.6),
    ("moeclip, text_adapter: false", "moeclip", {"text_adapter": False}, 433.6),
    ("promptmoe", "promptmoe", {}, None),
    ("wmoeclip", "wmoeclip", {}, None),
    ("zeroshot", "zeroshot", {}, None),
]


def counts(detector) -> dict[str, int]:
    """Backbone parameters, the method's trainable parameters and its frozen saved buffers."""
    backbone = sum(p.numel() for p in detector.backbone.parameters())
    own = {name: tensor for name, tensor in detector.named_parameters() if not name.startswith("backbone.")}
    trainable = sum(p.numel() for p in own.values() if p.requires_grad)
    frozen = sum(p.numel() for p in own.values() if not p.requires_grad)
    buffers = sum(
        tensor.numel()
        for name, tensor in detector.state_dict().items()
        if not name.startswith("backbone.") and name not in own
    )
    return {"backbone": backbone, "trainable": trainable, "frozen": frozen + buffers}


def main() -> None:
    logging.disable(logging.WARNING)  # OpenCLIP's "no pretrained weights" notice: intended here
    with torch.device("meta"):
        clip = open_clip.create_model(MODEL, pretrained=None, force_quick_gelu=True, device="meta")
        backbone = ClipBackbone(clip, BackboneConfig(model_name=MODEL, weights="random", image_size=SIZE), "meta")
        print(f"{MODEL} at {SIZE} px, millions of parameters")
        print(f"{'method':<42}{'backbone':>10}{'trainable':>11}{'frozen buf':>12}{'total':>10}{'paper':>8}")
        for label, method, overrides, paper in ROWS:
            row = counts(build_method(method, backbone, overrides))
            total = sum(row.values())
            cells = [row["backbone"], row["trainable"], row["frozen"], total]
            published = "-" if paper is None else f"{paper:.1f}"
            print(f"{label:<42}" + "".join(f"{value / 1e6:>{w}.2f}" for value, w in zip(cells, (10, 11, 12, 10))) + f"{published:>8}")


if __name__ == "__main__":
    main()
