"""fp32 against bf16 autocast, the frozen forward and MoECLIP inference, in one run.

    python benchmarks/precision_speed.py [--device auto] [--batch-size 1]
        [--backbone ViT-L-14-336] [--image-size 518] [--warmup 1] [--repeats 3]

Random weights, nothing read from disk. The four passes run interleaved on the same
input; the table gives seconds per image and the bf16 speed-up. The issue's CPU target:
``zsad predict`` with ViT-L-14-336 at 518 in bf16 in <= 5 s an image (2 cores). Map
agreement of bf16 with fp32 is tested in tests/test_cpu_bf16.py.
"""
from __future__ import annotations

import argparse

import torch
from _bench import add_common_options, describe_device, median, setup, time_interleaved

from zsad.backbone import create_backbone
from zsad.engine.runtime import autocast
from zsad.methods import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = setup(args)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("moeclip", backbone, {}).eval().to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    words = ["object"] * args.batch_size

    def under(precision: str, function):
        def run():
            with autocast(device, precision):
                return function()

        return run

    frozen = lambda: backbone.forward_visual(images, taps=detector.blocks)  # noqa: E731
    moeclip = lambda: detector(images, words)  # noqa: E731
    passes = {
        f"{name} {precision}": under(precision, function)
        for name, function in (("frozen forward", frozen), ("MoECLIP inference", moeclip))
        for precision in ("fp32", "bf16")
    }
    times = time_interleaved(passes, device, "fp32", args.warmup, args.repeats)
    print(f"{args.backbone} (random weights), {args.image_size} px, batch {args.batch_size}, {describe_device(device)}; "
          f"median of {args.repeats} after {args.warmup} warm-up(s)")
    print(f"| {'pass':<18} | {'fp32 s/image':>12} | {'bf16 s/image':>12} | {'fp32 / bf16':>11} |")
    print(f"|{'-' * 20}|{'-' * 14}|{'-' * 14}|{'-' * 13}|")
    for name in ("frozen forward", "MoECLIP inference"):
        fp32 = median(times[f"{name} fp32"]) / args.batch_size
        bf16 = median(times[f"{name} bf16"]) / args.batch_size
        print(f"| {name:<18} | {fp32:>12.3f} | {bf16:>12.3f} | {fp32 / bf16:>11.2f} |")


if __name__ == "__main__":
    main()
