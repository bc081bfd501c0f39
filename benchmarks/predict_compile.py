"""zsad's own predict path (``Predictor.score_and_map``: transform, forward, maps and
scores to the host) eager against ``--compile MODE``, measured in one run.

    python benchmarks/predict_compile.py [--compile default] [--method moeclip]
        [--backbone zsad-tiny] [--image-size 64] [--device auto] [--precision fp32|bf16]
        [--batch-size 8] [--warmup 3] [--repeats 10]

Random weights (no download, nothing read from disk); one detector shared by both
predictors. The compiled predictor's first call (which compiles) is timed alone; then,
interleaved on the same images (median of ``--repeats`` timed calls after ``--warmup``):

* eager: ``zsad predict`` without ``--compile``;
* compiled: with ``--compile MODE``;
* compiled, short batch: ``--batch-size - 1`` images, padded to the batch size (the
  last batch of a run): no new compile, about the full batch's time.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _bench import add_common_options, describe_device, median, setup, synchronize, time_interleaved
from PIL import Image

from zsad.engine.predictor import Predictor
from zsad.methods.build import build_detector
from zsad.settings import COMPILE_MODES
from zsad.text import ClassNames


def random_images(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser, batch_size=8)
    parser.add_argument("--compile", default="default", choices=[mode for mode in COMPILE_MODES if mode != "off"])
    parser.add_argument("--method", default="moeclip")
    parser.add_argument("--backbone", default="zsad-tiny")
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's own")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = setup(args)
    warnings.filterwarnings("ignore", message=".*is trainable but no checkpoint was given")  # random weights anyway

    detector = build_detector(args.method, backbone=args.backbone, weights="random", image_size=args.image_size)
    names = ClassNames.load()
    eager = Predictor(detector, device, names, args.precision)
    compiled = Predictor(detector, device, names, args.precision, compile=args.compile)
    images = random_images(args.batch_size, detector.backbone.image_size)
    short = images[: max(1, args.batch_size - 1)]
    compiled.inference.reserve(args.batch_size)

    with torch.inference_mode():
        synchronize(device)
        start = time.perf_counter()
        compiled.score_and_map(images, "bottle")
        synchronize(device)
        first_call = time.perf_counter() - start
    passes = {
        "eager": lambda: eager.score_and_map(images, "bottle"),
        f"compiled ({args.compile})": lambda: compiled.score_and_map(images, "bottle"),
        f"compiled, short batch of {len(short)}": lambda: compiled.score_and_map(short, "screw"),
    }
    # The predictors apply the precision themselves: the timer adds no autocast of its own.
    times = time_interleaved(passes, device, "fp32", args.warmup, args.repeats)

    print(f"{args.method} on {args.backbone} (random weights), {detector.backbone.image_size} px, batch {args.batch_size}, "
          f"{args.precision}, {describe_device(device)}; median of {args.repeats} after {args.warmup} warm-ups")
    print(f"first compiled call (compiles): {first_call:.1f} s")
    reference = median(times["eager"])
    print(f"| {'pass':<32} | {'ms / batch':>10} | {'images/s':>9} | {'x eager':>7} |")
    print(f"|{'-' * 34}|{'-' * 12}|{'-' * 11}|{'-' * 9}|")
    for name, values in times.items():
        seconds = median(values)
        count = len(short) if "short" in name else args.batch_size
        print(f"| {name:<32} | {seconds * 1e3:>10.1f} | {count / seconds:>9.3g} | {seconds / reference:>7.3f} |")
    pairs = [e / c for e, c in zip(times["eager"], times[f"compiled ({args.compile})"])]
    print(f"eager / compiled (median of interleaved pairs): {median(pairs):.3f} (min {min(pairs):.3f}, max {max(pairs):.3f})")


if __name__ == "__main__":
    main()
