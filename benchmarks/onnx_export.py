"""ONNX export of a full-size detector and time per image on the CPU, onnxruntime vs torch.

    python benchmarks/onnx_export.py [--backbone ViT-L-14-336] [--image-size 518] [--method zeroshot]
        [--threads 2] [--repeats 3] [--out /tmp/zsad-onnx]

RANDOM weights (nothing is downloaded): the export, the file size and the timings are
what is measured; the onnxruntime-vs-torch difference is checked by the export itself.
Timings: wall clock per image, batch of 1, after one warm-up run, both runtimes limited
to --threads threads (on a shared machine, compare the two within one run only).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from zsad.api import build_detector
from zsad.engine.onnx_export import OnnxPredictor, export_onnx


def per_image(function, images, repeats: int) -> float:
    function(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function(images)
    return (time.perf_counter() - start) / (repeats * images.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--method", default="zeroshot")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zsad-onnx"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    warnings.filterwarnings("ignore", message="method .* is trainable")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_detector(args.method, backbone=args.backbone, weights="random", image_size=args.image_size).eval()
    path = args.out / f"{args.method}-{args.backbone}-{args.image_size}.onnx"
    start = time.perf_counter()
    check = export_onnx(model, "object", path, meta={"method": args.method, "backbone": args.backbone, "weights": "random"})
    export_seconds = time.perf_counter() - start
    files = sorted(p for p in path.parent.iterdir() if p.name.startswith(path.stem) or p.suffix == ".data")
    total_bytes = sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
    print(f"RANDOM WEIGHTS: {args.method} on {args.backbone} at {args.image_size} px (pipeline check; timings are the point)")
    print(f"export: {export_seconds:.0f} s (incl. the check), {path.stat().st_size / 2**20:.0f} MiB .onnx, "
          f"{total_bytes / 2**20:.0f} MiB in {path.parent} ({len(files)} file(s))")
    print(f"onnxruntime vs torch, batch {check.batch_size}: max |diff| map {check.map_difference:.2e}, score {check.score_difference:.2e}")
    runtime = OnnxPredictor(path, threads=args.threads)
    images = torch.randn(1, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch_seconds = per_image(lambda x: model(x, ["object"]), images, args.repeats)
    onnx_seconds = per_image(runtime.run, images, args.repeats)
    print(f"wall time per image on the CPU ({args.threads} threads): torch {torch_seconds:.2f} s, onnxruntime {onnx_seconds:.2f} s "
          f"(onnxruntime / torch = {onnx_seconds / torch_seconds:.2f})")


if __name__ == "__main__":
    main()
