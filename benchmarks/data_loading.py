"""Training data: what a loading worker spends per sample, and the batched augmentation
on the training device, in one run.

    python benchmarks/data_loading.py [--data KIND:PATH] [--image-size 518] [--samples 32]
        [--device auto] [--batch-sizes 2 8 32] [--repeats 5] [--threads 1]

Without ``--data`` an MVTec-like set (256 px files) is generated into a temporary folder.

Worker side (this process, ``--threads`` torch threads, CPU; the items read in turn, so a
change in machine load hits every row alike):

* reference: decode + resize (or a read of the resized-image cache), then torchvision's
  per-sample ops on uint8 with the same draws (translate, rotate, flips, colour jitter:
  what the workers ran before the augmentation moved to the device) and normalisation;
* now: decode + resize (or the cache read) and the draw of the augmentation choices.

Device side: per batch of ``S x S`` uint8 images and masks already on ``--device``, the
median of ``--repeats`` calls of (a) scaling to [0, 1] + CLIP normalisation alone (needed
anyway) and (b) ``augment_batch`` (one resampling of the uint8 batch to [0, 1] floats +
colour jitter) + normalisation.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from _bench import describe_device, median, setup, time_interleaved
from torchvision.transforms import InterpolationMode

from zsad.data.augment import AugmentDraw, AugmentParams, AugmentSampler, augment_batch
from zsad.data.synth import generate_mvtec_like
from zsad.data.transforms import clip_normalize, normalize_image, unit_range
from zsad.engine.train_config import TrainingConfig
from zsad.engine.train_data import build_training_data, derive_seed


def torchvision_per_sample(image: torch.Tensor, mask: torch.Tensor, draw: AugmentDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: ``draw`` applied to one uint8 sample with torchvision's ops, one after
    the other (two resamplings when both translate and rotate fire), then normalised."""
    if draw.translate is not None:
        shift = dict(angle=0.0, translate=list(draw.translate), scale=1.0, shear=[0.0, 0.0], fill=0)
        image = F.affine(image, interpolation=InterpolationMode.BILINEAR, **shift)
        mask = F.affine(mask, interpolation=InterpolationMode.NEAREST, **shift)
    if draw.angle is not None:
        image = F.rotate(image, draw.angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        mask = F.rotate(mask, draw.angle, interpolation=InterpolationMode.NEAREST, fill=0)
    if draw.hflip:
        image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
    if draw.vflip:
        image, mask = F.vertical_flip(image), F.vertical_flip(mask)
    if draw.jitter is not None:
        brightness, contrast, saturation, hue = draw.jitter
        image = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(image, brightness), contrast), saturation)
        if hue != 0.0:
            image = F.adjust_hue(image, hue)
    return normalize_image(image), mask.float()


def worker_seconds(plain, cached, sampler: AugmentSampler, seed: int, count: int) -> dict[str, float]:
    """Mean seconds per item of each way of producing it, the ways interleaved item by item."""
    ways = {}

    def reference(data):
        def produce(index: int) -> None:
            item = data.dataset.dataset[index]
            draw = sampler.draw(torch.Generator().manual_seed(derive_seed(seed, 1, index)))
            torchvision_per_sample(item["image"], item["mask"], draw)
        return produce

    ways["reference: decode + resize + torchvision augment"] = reference(plain)
    ways["reference: cache read + torchvision augment"] = reference(cached)
    ways["now: decode + resize + draw"] = lambda index: plain.dataset[(1, index)]
    ways["now: cache read + draw"] = lambda index: cached.dataset[(1, index)]
    totals = dict.fromkeys(ways, 0.0)
    for index in range(count):
        for name, produce in ways.items():
            start = time.perf_counter()
            produce(index)
            totals[name] += time.perf_counter() - start
    return {name: total / count for name, total in totals.items()}


def device_seconds(
    device: torch.device, sampler: AugmentSampler, size: int, batch: int, repeats: int
) -> tuple[float, float]:
    """Median seconds per batch: (normalisation alone, augmentation + normalisation)."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=generator, dtype=torch.uint8).to(device)
    masks = (torch.rand(batch, 1, size, size, generator=generator) > 0.9).to(torch.uint8).to(device)
    params = AugmentParams.stack([sampler.draw(generator).encode() for _ in range(batch)]).to(device)
    passes = {
        "normalise": lambda: clip_normalize(unit_range(images)),
        "augment": lambda: clip_normalize(augment_batch(images, masks, params)[0]),
    }
    times = time_interleaved(passes, device, "fp32", warmup=2, repeats=repeats)
    return median(times["normalise"]), median(times["augment"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="KIND:PATH (default: a generated set)")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--device", default="auto", help="where the batched augmentation runs: auto, cpu, cuda ...")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker uses 1)")
    args = parser.parse_args()
    device = setup(args)
    size = args.image_size
    config = TrainingConfig()
    sampler = AugmentSampler(size, p=config.augment_p)
    with tempfile.TemporaryDirectory(prefix="zsad-data-bench-") as folder:
        spec = args.data
        if spec is None:
            root = Path(folder) / "mvtec"
            generate_mvtec_like(root, n_train=0, n_good=8, n_defect_per_kind=4, size=256, seed=0)
            spec = f"mvtec:{root}"
        plain = build_training_data([spec], size, config, cache_budget=0)
        count = min(args.samples, len(plain.dataset))
        start = time.perf_counter()
        cached = build_training_data([spec], size, config, cache_budget=2**62)
        fill = (time.perf_counter() - start) / len(cached.dataset)
        per_sample = worker_seconds(plain, cached, sampler, config.seed, count)

    print(f"{spec if args.data else 'generated MVTec-like set, 256 px files'}, {size} px, p = {config.augment_p}")
    print(f"worker side: {count} samples, CPU, {args.threads} thread(s)")
    print(f"| {'per sample':<50} | {'ms':>7} |")
    print(f"|{'-' * 52}|{'-' * 9}|")
    for name, seconds in [*per_sample.items(), ("filling the cache (once, per item)", fill)]:
        print(f"| {name:<50} | {seconds * 1e3:>7.1f} |")
    reference, now = per_sample["reference: cache read + torchvision augment"], per_sample["now: cache read + draw"]
    print(f"ratio reference / now, from the cache: {reference / now:.1f}")

    print(f"device side: {describe_device(device)}, {size} px, median of {args.repeats}")
    print(f"| {'batch':>5} | {'normalise (ms)':>14} | {'augment + normalise (ms)':>24} | {'augmentation ms / image':>23} |")
    print(f"|{'-' * 7}|{'-' * 16}|{'-' * 26}|{'-' * 25}|")
    for batch in args.batch_sizes:
        normalise, augment = device_seconds(device, sampler, size, batch, args.repeats)
        print(f"| {batch:>5} | {normalise * 1e3:>14.1f} | {augment * 1e3:>24.1f} | {(augment - normalise) / batch * 1e3:>23.2f} |")


if __name__ == "__main__":
    main()
