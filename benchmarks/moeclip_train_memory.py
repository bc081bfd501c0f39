"""Peak memory of one MoECLIP training step, with and without activation checkpointing.

    python benchmarks/moeclip_train_memory.py [--backbone ViT-L-14-336] [--image-size 518] [--batch-size 2]

Each setting runs in its own child process (so peaks do not mix); the peak resident set
size of that process (CPU) or torch's peak allocated memory (CUDA) is reported with
their ratio and the trainable / total parameter counts. Random weights.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def one_step(backbone_name: str, image_size: int, batch_size: int, checkpointing: bool, device: str) -> dict:
    import torch

    from zsad.backbone import create_backbone
    from zsad.methods import build_method

    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    torch.manual_seed(0)
    backbone = create_backbone(model_name=backbone_name, weights="random", image_size=image_size)
    detector = build_method("moeclip", backbone, {"activation_checkpointing": checkpointing}).to(device).train()
    optimiser = torch.optim.Adam([p for p in detector.parameters() if p.requires_grad], lr=5e-4, betas=(0.5, 0.999))
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    masks = (torch.rand(batch_size, 1, image_size, image_size, device=device) > 0.95).float()
    labels = torch.ones(batch_size, dtype=torch.long, device=device)
    detector.text_features(["object"] * batch_size, torch.device(device))  # cache text first
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = sum(detector(images, ["object"] * batch_size, masks=masks, labels=labels).losses.values())
    loss.backward()
    optimiser.step()
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "peak_mib": peak,
        "model_rss_mib": baseline_rss / 1024,
        "step_seconds": seconds,
        "trainable": detector.trainable_parameter_count(),
        "total": sum(p.numel() for p in detector.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = one_step(args.backbone, args.image_size, args.batch_size, args.child == "checkpointing", args.device)
        print(json.dumps(result))
        return
    results = {}
    for setting in ("plain", "checkpointing"):
        command = [sys.executable, __file__, "--child", setting, "--backbone", args.backbone,
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--device", args.device]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[setting] = json.loads(output)
    plain, checkpointed = results["plain"], results["checkpointing"]
    unit = "peak allocated (CUDA)" if args.device.startswith("cuda") else "peak RSS of the process (CPU)"
    print(f"{args.backbone} random weights, {args.image_size} px, batch {args.batch_size}, one training step, {args.device}")
    print(f"trainable parameters {plain['trainable']:,} of {plain['total']:,} ({plain['trainable'] / plain['total']:.2%})")
    print(f"{'setting':<26}{unit:>32}{'step s':>10}")
    for name, row in (("no checkpointing", plain), ("activation checkpointing", checkpointed)):
        print(f"{name:<26}{row['peak_mib']:>29.0f} MiB{row['step_seconds']:>10.1f}")
    print(f"model alone (before the step): {plain['model_rss_mib']:.0f} MiB RSS")
    print(f"memory ratio checkpointing / plain: {checkpointed['peak_mib'] / plain['peak_mib']:.3f}; "
          f"time ratio: {checkpointed['step_seconds'] / plain['step_seconds']:.3f}")


if __name__ == "__main__":
    main()
