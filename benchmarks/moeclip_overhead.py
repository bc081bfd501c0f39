"""MoECLIP inference time over the frozen backbone's own forward, measured in one run.

    python benchmarks/moeclip_overhead.py [--backbone ViT-L-14-336] [--image-size 518] [--repeats 3]

Random weights (no download). Both passes run interleaved (A B A B ...) on the same
input; the ratio of medians is printed. The issue's target is <= 1.05 for ViT-L-14-336 at
518 px, batch 1, CPU. Wall and process-CPU clocks are both reported: on a shared
machine the CPU clock is less disturbed by other tenants. The frozen forward is the backbone alone (all 24 blocks, CLS
embedding); MoECLIP adds the MoE modules (sparse dispatch), PAA, projections, 12 maps,
smoothing and the depth-wise adapter (text features cached, as in real use).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from zsad.backbone import create_backbone
from zsad.methods import build_method


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    torch.manual_seed(0)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("moeclip", backbone, {}).eval()
    images = torch.randn(1, 3, args.image_size, args.image_size)

    def frozen():
        backbone.forward_visual(images, taps=detector.blocks)

    def moeclip():
        detector(images, ["object"])

    with torch.inference_mode():
        frozen(), moeclip()  # warm-up (and text-feature cache)
        frozen_times, moe_times = [], []
        for _ in range(args.repeats):
            frozen_times.append(timed(frozen))
            moe_times.append(timed(moeclip))
    print(f"backbone {args.backbone} (random weights), {args.image_size} px, batch 1, {torch.get_num_threads()} threads, CPU")
    print(f"trainable parameters: {detector.trainable_parameter_count():,}  "
          f"backbone parameters: {sum(p.numel() for p in backbone.parameters()):,}")
    print(f"{'pass':<28}{'clock':<6}{'median s':>10}{'min s':>10}{'max s':>10}")
    for clock, column in (("wall", 0), ("cpu", 1)):
        for name, values in (("frozen backbone forward", frozen_times), ("MoECLIP inference", moe_times)):
            values = [v[column] for v in values]
            print(f"{name:<28}{clock:<6}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    for clock, column in (("wall", 0), ("cpu", 1)):
        ratios = [m[column] / f[column] for m, f in zip(moe_times, frozen_times)]
        print(f"ratio MoECLIP / frozen ({clock}): median of pairs {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05")


if __name__ == "__main__":
    main()
