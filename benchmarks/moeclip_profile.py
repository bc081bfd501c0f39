"""Where MoECLIP's time goes on top of the frozen backbone: split timings and a torch.profiler table.

    python benchmarks/moeclip_profile.py [--device auto] [--precision fp32|bf16] [--batch-size 1]
        [--backbone ViT-L-14-336] [--image-size 518] [--warmup 3] [--repeats 10] [--rows 25] [--train]

Random weights. Three passes timed interleaved (median of ``--repeats``):

* frozen: the block-by-block frozen forward (fused attention);
* + MoE: the same forward with the four MoE modules in the residual stream;
* MoECLIP: the whole inference (MoE, PAA heads, 12 maps, smoothing, score).

"+ MoE" minus "frozen" is the MoE modules' cost, "MoECLIP" minus "+ MoE" the heads' and
maps'. Then one profiled MoECLIP call (``--train``: one training step, forward + backward
+ Adam), its operators sorted by device time, and the number of device kernels it launched.
"""
from __future__ import annotations

import argparse

import torch
from _bench import add_common_options, describe_device, median, setup, synchronize, time_interleaved
from torch.profiler import ProfilerActivity, profile

from zsad.backbone import create_backbone
from zsad.engine.runtime import autocast
from zsad.methods import build_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(parser)
    parser.add_argument("--backbone", default="ViT-L-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25, help="profiler table rows")
    parser.add_argument("--train", action="store_true", help="profile a training step instead of inference")
    args = parser.parse_args()
    device = setup(args)
    backbone = create_backbone(model_name=args.backbone, weights="random", image_size=args.image_size)
    detector = build_method("moeclip", backbone, {}).eval().to(device)
    batch, size = args.batch_size, args.image_size
    images = torch.randn(batch, 3, size, size, device=device)
    words = ["object"] * batch
    stream = dict(zip(detector.blocks, detector.moe_layers))

    print(f"{args.backbone} (random weights), {size} px, batch {batch}, {args.precision}, {describe_device(device)}")
    if not args.train:
        passes = {
            "frozen": lambda: backbone.forward_visual(images, taps=detector.blocks),
            "+ MoE": lambda: backbone.forward_visual(images, taps=detector.blocks, stream_modules=stream),
            "MoECLIP": lambda: detector(images, words),
        }
        times = time_interleaved(passes, device, args.precision, args.warmup, args.repeats)
        reference = median(times["frozen"])
        for name, values in times.items():
            print(f"{name:<10} {median(values) * 1e3:8.2f} ms  x{median(values) / reference:.3f}")
        print(f"MoE modules {(median(times['+ MoE']) - reference) * 1e3:.2f} ms, heads + maps "
              f"{(median(times['MoECLIP']) - median(times['+ MoE'])) * 1e3:.2f} ms")

        def work():
            with torch.inference_mode(), autocast(device, args.precision):
                detector(images, words)
    else:
        masks = (torch.rand(batch, 1, size, size, device=device) > 0.9).float()
        labels = torch.randint(0, 2, (batch,), device=device)
        detector.train()
        optimiser = torch.optim.Adam([p for p in detector.parameters() if p.requires_grad], lr=5e-4)

        def work():
            with autocast(device, args.precision):
                output = detector(images, words, masks, labels)
            total = torch.stack([value.float() for value in output.losses.values()]).sum()
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()

    for _ in range(args.warmup):
        work()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        work()
        synchronize(device)
    events = profiler.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    kernels = [e for e in profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"device kernels in one call: {len(kernels)}, their total time {sum(e.device_time for e in kernels) / 1e3:.2f} ms")


if __name__ == "__main__":
    main()
