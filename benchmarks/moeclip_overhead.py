"""MoECLIP inference against the frozen backbone's own forward, measured in one run.

    python benchmarks/moeclip_overhead.py [--device auto] [--precision fp32|bf16]
        [--batch-size 1] [--backbone ViT-L-14-336] [--image-size 518]
        [--warmup 3] [--repeats 10] [--dispatch auto] [--compile] [--cuda-graphs] [--compile-moeclip]

Random weights (no download, nothing read from disk). Passes, interleaved on the same
input (median of ``--repeats`` timed calls after ``--warmup``):

* OpenCLIP's own ``visual`` forward (eager), for reference;
* zsad's block-by-block frozen forward through OpenCLIP's block forward (the path
  before fused attention);
* zsad's frozen forward (fused attention) -- the denominator of the ratios;
* MoECLIP inference: MoE modules, PAA, projections, 12 maps, smoothing, depth-wise
  adapter (text features cached, as in real use);
* with ``--compile``: OpenCLIP's ``visual`` under ``torch.compile`` (compiles first);
* with ``--cuda-graphs`` (CUDA): the frozen forward and MoECLIP inference (text features
  computed once, outside the graph) each captured in a CUDA graph and replayed: no
  Python or launch cost, only the GPU's work;
* with ``--compile-moeclip``: MoECLIP inference under ``torch.compile`` (default mode).

The issue's targets: MoECLIP / frozen <= 1.05 at batch 1 and 32 in fp32 and bf16;
>= 350 images/s for MoECLIP in bf16 at batch 32 on one H100.
"""
from __future__ import annotations

import argparse

import torch
from _bench import add_common_options, cuda_graphed, describe_device, median, setup, time_interleaved

from zsad.backbone import create_backbone
from zsad.methods import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dispatch", default="auto", choices=("auto", "sparse", "stacked", "dense"))
    parser.add_argument("--compile", action="store_true", help="also time OpenCLIP's visual under torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time frozen and MoECLIP as CUDA graphs")
    parser.add_argument("--compile-moeclip", action="store_true", help="also time MoECLIP under torch.compile")
    args = parser.parse_args()
    device = setup(args)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("moeclip", backbone, {"dispatch": args.dispatch}).eval().to(device)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    words = ["object"] * args.batch_size

    def zsad_frozen(fused: bool):
        def run():
            backbone.fused_attention = fused
            try:
                return backbone.forward_visual(images, taps=detector.blocks)
            finally:
                backbone.fused_attention = True

        return run

    passes = {
        "OpenCLIP visual, eager": lambda: backbone.clip.visual(images),
        "zsad frozen, OpenCLIP blocks": zsad_frozen(False),
        "zsad frozen, fused attention": zsad_frozen(True),
        "MoECLIP inference": lambda: detector(images, words),
    }
    if args.compile:
        compiled = torch.compile(backbone.clip.visual)
        passes["OpenCLIP visual, torch.compile"] = lambda: compiled(images)
    if args.cuda_graphs or args.compile_moeclip:
        with torch.inference_mode():
            text = detector.text_features(words, device)
    if args.cuda_graphs:
        passes["zsad frozen, CUDA graph"] = cuda_graphed(zsad_frozen(True), device, args.precision)
        passes["MoECLIP, CUDA graph"] = cuda_graphed(lambda: detector.detect(images, text), device, args.precision)
    if args.compile_moeclip:
        compiled_detect = torch.compile(detector.detect)
        passes["MoECLIP, torch.compile"] = lambda: compiled_detect(images, text)
    times = time_interleaved(passes, device, args.precision, args.warmup, args.repeats)

    print(f"{args.backbone} (random weights), {args.image_size} px, batch {args.batch_size}, {args.precision}, "
          f"dispatch {args.dispatch}, {describe_device(device)}; median of {args.repeats} after {args.warmup} warm-ups")
    reference = median(times["zsad frozen, fused attention"])
    print(f"| {'pass':<32} | {'ms / batch':>10} | {'images/s':>9} | {'x frozen':>8} |")
    print(f"|{'-' * 34}|{'-' * 12}|{'-' * 11}|{'-' * 10}|")
    for name, values in times.items():
        seconds = median(values)
        print(f"| {name:<32} | {seconds * 1e3:>10.1f} | {args.batch_size / seconds:>9.3g} | {seconds / reference:>8.3f} |")
    pairs = [m / f for m, f in zip(times["MoECLIP inference"], times["zsad frozen, fused attention"])]
    print(f"MoECLIP / frozen (median of interleaved pairs): {median(pairs):.3f} "
          f"(min {min(pairs):.3f}, max {max(pairs):.3f}); target <= 1.05")
    if args.cuda_graphs:
        pairs = [m / f for m, f in zip(times["MoECLIP, CUDA graph"], times["zsad frozen, CUDA graph"])]
        print(f"MoECLIP / frozen, both CUDA graphs (median of interleaved pairs): {median(pairs):.3f} "
              f"(min {min(pairs):.3f}, max {max(pairs):.3f})")


if __name__ == "__main__":
    main()
