"""WMoE-CLIP inference time over the frozen backbone's own forward, measured in one run.

    python benchmarks/wmoeclip_overhead.py [--backbone ViT-L-14-336] [--image-size 518]
        [--repeats 3] [--batch-size 1] [--device auto]

Random weights (no download). Both passes run interleaved (A B A B ...) on the same
input; the ratios of each pair and their median are printed. The frozen forward is the
visual tower alone up to the last tapped block (CLS embedding included). WMoE-CLIP adds,
per image, the CTDS VAE and the encoding of its two shifted prompts by the frozen text
transformer (CTDS makes the prompts depend on the image, so they cannot be cached), and
per tapped layer the projection, the Haar transform, the frequency weighting, the
cross-attention and the map; then SA-MoE, the score and the smoothing.

On the CPU, wall and process-CPU clocks are both reported (the CPU clock is less
disturbed by other tenants of a shared machine); on CUDA the wall clock is taken after
``torch.cuda.synchronize()``.
"""
from __future__ import annotations

import argparse
import statistics
import warnings

import torch
from _bench import timed_call

from zsad.backbone import create_backbone
from zsad.engine.runtime import resolve_device
from zsad.methods import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    torch.manual_seed(0)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("wmoeclip", backbone, {}).eval().to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    names = ["object"] * args.batch_size

    def frozen():
        backbone.forward_visual(images, taps=detector.taps)

    def wmoeclip():
        detector(images, names)

    with torch.inference_mode():
        frozen(), wmoeclip()  # warm-up (tokenizer, kernels, allocator)
        frozen_times, method_times = [], []
        for _ in range(args.repeats):
            frozen_times.append(timed_call(frozen, device))
            method_times.append(timed_call(wmoeclip, device))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"backbone {args.backbone} (random weights), {args.image_size} px, batch {args.batch_size}, {where}")
    print(f"trainable parameters: {detector.trainable_parameter_count():,}  "
          f"backbone parameters: {sum(p.numel() for p in backbone.parameters()):,}")
    clocks = (("wall", 0),) if device.type == "cuda" else (("wall", 0), ("cpu", 1))
    print(f"{'pass':<28}{'clock':<6}{'median s':>10}{'min s':>10}{'max s':>10}")
    for clock, column in clocks:
        for name, values in (("frozen backbone forward", frozen_times), ("WMoE-CLIP inference", method_times)):
            values = [v[column] for v in values]
            print(f"{name:<28}{clock:<6}{statistics.median(values):>10.3f}{min(values):>10.3f}{max(values):>10.3f}")
    for clock, column in clocks:
        ratios = [m[column] / f[column] for m, f in zip(method_times, frozen_times)]
        print(f"ratio WMoE-CLIP / frozen ({clock}): median of pairs {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
