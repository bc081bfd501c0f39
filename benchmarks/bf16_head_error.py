"""bf16 autocast error of MoECLIP's map head (PAA -> ln_post -> projection -> patch-text logits).

    python benchmarks/bf16_head_error.py [--width 1024] [--text-dim 768] [--grid 37]

For three token distributions (zero mean; mean shifted by 3; one channel at +300) the
fused one-matmul head (`project_patch_averages`) and the plain composition
LayerNorm -> Linear on each PAA scale are run under CPU bf16 autocast and in fp32, from
the same fp32 tokens and random weights. Printed per path: the feature relative error
||f_bf16 - f_fp32|| / ||f_fp32|| (worst PAA scale) and the largest absolute error of the
logits 100 * cos(V, [T_N, T_A]) on the patch grid. Random tensors: a numerics check,
not a result.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from zsad.methods.moeclip.heads import anomaly_logits, patch_average, project_patch_averages

SCALES = (1, 3, 5)


def token_distributions(width: int, grid: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """(1, grid*grid, width) fp32 tokens per distribution name."""
    base = torch.randn(1, grid * grid, width, generator=generator)
    outlier = base.clone()
    outlier[..., 0] += 300.0
    return {"zero mean": base, "mean shifted by 3": base + 3.0, "one channel at +300": outlier}


def fused_head(tokens, layer_norm, projection):
    return project_patch_averages(tokens, SCALES, layer_norm, projection)


def plain_head(tokens, layer_norm, projection):
    return [projection(layer_norm(averaged)) for averaged in patch_average(tokens, SCALES)]


def errors(head, tokens, layer_norm, projection, text) -> tuple[float, float]:
    """(worst feature relative error, max logit error) of bf16 autocast vs fp32."""
    with torch.no_grad():
        reference = head(tokens, layer_norm, projection)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = head(tokens, layer_norm, projection)
            low_logits = [anomaly_logits(features, text) for features in low]
        reference_logits = [anomaly_logits(features, text) for features in reference]
    feature_error = max(
        float(torch.linalg.vector_norm(lo.float() - ref) / torch.linalg.vector_norm(ref)) for lo, ref in zip(low, reference)
    )
    logit_error = max(float((lo.float() - ref).abs().max()) for lo, ref in zip(low_logits, reference_logits))
    return feature_error, logit_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--grid", type=int, default=37)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    layer_norm = nn.LayerNorm(args.width)
    with torch.no_grad():
        layer_norm.weight.copy_(1 + 0.1 * torch.randn(args.width, generator=generator))
        layer_norm.bias.copy_(0.1 * torch.randn(args.width, generator=generator))
    projection = nn.Linear(args.width, args.text_dim, bias=False)
    nn.init.xavier_uniform_(projection.weight)
    text = nn.functional.normalize(torch.randn(2, args.text_dim, generator=generator), dim=-1)
    print(f"d={args.width}, d_t={args.text_dim}, grid {args.grid}x{args.grid}, scales {SCALES}; CPU bf16 autocast vs fp32")
    print("| token distribution | fused: feature rel. error | fused: max logit error "
          "| plain LN->Linear: feature rel. error | plain LN->Linear: max logit error |")
    print("|---|---|---|---|---|")
    for name, tokens in token_distributions(args.width, args.grid, generator).items():
        fused = errors(fused_head, tokens, layer_norm, projection, text)
        plain = errors(plain_head, tokens, layer_norm, projection, text)
        print(f"| {name} | {100 * fused[0]:.2f} % | {fused[1]:.3f} | {100 * plain[0]:.2f} % | {plain[1]:.3f} |")


if __name__ == "__main__":
    main()
