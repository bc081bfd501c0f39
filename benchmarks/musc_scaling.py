"""MuSc: time and peak memory of the mutual scoring (MSM) against the set size N, the
backbone extraction apart, and whether bf16 features change the image ranking.

    python benchmarks/musc_scaling.py msm [--sizes 10 20 50 100] [--measure-up-to 20] [--device cpu]
    python benchmarks/musc_scaling.py backbone [--images 2]
    python benchmarks/musc_scaling.py bf16 [--sets 5]

msm: random unit features at the real sizes (ViT-L-14-336 at 518 px: L = 1369 patches,
C = 1024), one feature set (tap, degree) of the 12 MuSc computes. Sizes up to
--measure-up-to run in full, each in a fresh process (its peak resident memory is read
from the OS, less the process's resident memory before scoring); larger ones are
EXTRAPOLATED from the measured time per image pair product (the blocked MSM computes
ceil(N/b)(ceil(N/b)+1)/2 blocks of b x b pairs) and from the memory model (features +
one similarity block + the (N, N, L) minima table), and marked so.
backbone: ViT-L-14-336 with RANDOM weights at 518 px on this device, per image (the
extraction cost of MuSc: one forward pass to the last block).
bf16: sets of generated images (zsad-tiny, random weights) and random real-size unit
features with planted odd patches, MSM on features rounded to bf16 (products accumulated
in fp32) against fp32: the image ranking (Kendall tau of the raw scores, identical
argsort) and the largest patch-score difference.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from zsad.methods.musc.mutual import images_per_block, mutual_scores

PATCHES, WIDTH, PASSES = 1369, 1024, 12
MIB = 2**20


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_msm(n: int, block_mb: float, device: str) -> dict:
    """Run in a child process: one MSM pass on random unit features, its time and memory."""
    torch.manual_seed(n)
    features = F.normalize(torch.randn(n, PATCHES, WIDTH), dim=-1)
    before = rss_mib()
    start = time.perf_counter()
    scores = mutual_scores(lambda a, b: features[a:b], n, PATCHES, 0.3, 0.0, int(block_mb * MIB), 2**30, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert torch.isfinite(scores).all()
    return {"n": n, "seconds": seconds, "features_mib": features.numel() * 4 / MIB,
            "peak_above_features_mib": peak_rss_mib() - before,
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / MIB if device.startswith("cuda") else None}


def pair_products(n: int, block_mb: float) -> int:
    """Image pair products (L x L blocks) the symmetric blocked MSM computes for N images."""
    step = images_per_block(PATCHES, int(block_mb * MIB))
    blocks = math.ceil(n / step)
    full, last = divmod(n, step)
    sizes = [step] * full + ([last] if last else [])
    return sum(sizes[i] * sizes[j] for i in range(blocks) for j in range(i, blocks))


def memory_model_mib(n: int, block_mb: float) -> float:
    step = images_per_block(PATCHES, int(block_mb * MIB))
    block = 4 * (min(n, step) * PATCHES) ** 2 / MIB
    table = 4 * n * n * PATCHES / MIB
    return block + table


def msm(args) -> None:
    rows = []
    for n in args.sizes:
        if n <= args.measure_up_to:
            out = subprocess.run([sys.executable, __file__, "_one", str(n), str(args.block_mb), args.device],
                                 capture_output=True, text=True, check=True)
            row = {**json.loads(out.stdout.strip().splitlines()[-1]), "measured": True}
        else:
            row = {"n": n, "measured": False, "features_mib": n * PATCHES * WIDTH * 4 / MIB}
        row["pair_products"] = pair_products(n, args.block_mb)
        rows.append(row)
    measured = [row for row in rows if row["measured"]]
    per_pair = max(row["seconds"] / row["pair_products"] for row in measured)  # the slowest measured rate
    print(f"MSM, one feature set of 12 (L = {PATCHES}, C = {WIDTH}, fp32, block {args.block_mb:g} MiB, device {args.device}, "
          f"{torch.get_num_threads()} threads); time per pair product {per_pair * 1e3:.1f} ms (slowest measured)")
    print("| N | pair products | one set (s) | all 12 sets (s) | per image, 12 sets (s) | features, 12 sets (GiB) | "
          "peak above the features (MiB): measured / model |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        one = row["seconds"] if row["measured"] else per_pair * row["pair_products"]
        mark = "" if row["measured"] else " (extrapolated)"
        peak = f"{row['peak_above_features_mib']:.0f}" if row["measured"] else "n/a"
        print(f"| {row['n']} | {row['pair_products']} | {one:.1f}{mark} | {one * PASSES:.0f}{mark} | "
              f"{one * PASSES / row['n']:.2f}{mark} | {row['features_mib'] * PASSES / 1024:.2f} | "
              f"{peak} / {memory_model_mib(row['n'], args.block_mb):.0f} |")
    print("MuSc stores 4 taps of standardised tokens (4 x N x L x C float32, spilled to disk beyond memory_mb) and "
          "builds each (tap, degree) block on the fly, so the 12-set column is what a naive implementation would hold.")


def backbone(args) -> None:
    from zsad.backbone import BackboneConfig, create_backbone

    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    torch.manual_seed(0)
    built = time.perf_counter()
    model = create_backbone(BackboneConfig("ViT-L-14-336", "random", 518))
    built = time.perf_counter() - built
    images = torch.randn(1, 3, 518, 518)
    taps = model.default_taps()
    times = []
    with torch.inference_mode():
        for _ in range(args.images):
            start = time.perf_counter()
            model.forward_visual(images, taps=taps)
            times.append(time.perf_counter() - start)
    print(f"ViT-L-14-336 random weights, 518 px, batch 1, {torch.get_num_threads()} threads: built in {built:.1f} s; "
          f"forward per image {min(times):.2f} s (min of {len(times)}: {', '.join(f'{t:.2f}' for t in times)})")


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> float:
    da = torch.sign(a[:, None] - a[None])
    db = torch.sign(b[:, None] - b[None])
    n = a.shape[0]
    return float((da * db).sum() / (n * (n - 1)))


def bf16_check(args) -> None:
    def both(features):
        n, length, _ = features.shape
        fp32 = mutual_scores(lambda a, b: features[a:b], n, length, 0.3)
        rounded = features.bfloat16().float()  # bf16 inputs, every product accumulated in fp32
        bf16 = mutual_scores(lambda a, b: rounded[a:b], n, length, 0.3)
        return fp32, bf16

    def report(name, fp32, bf16):
        a, b = fp32.amax(dim=1), bf16.amax(dim=1)
        same = torch.equal(a.argsort(), b.argsort())
        print(f"| {name} | {kendall_tau(a, b):.4f} | {same} | {(fp32 - bf16).abs().max():.2e} | {(a - b).abs().max():.2e} |")
        return same

    print("| set | Kendall tau (image scores) | same ranking | max patch diff | max image diff |")
    print("|---|---:|---:|---:|---:|")
    all_same = True
    generator = torch.Generator().manual_seed(0)
    for index in range(args.sets):  # real sizes, a few odd patches planted in a third of the images
        n = 12
        base = F.normalize(torch.randn(1, 64, WIDTH, generator=generator), dim=-1)
        pick = torch.randint(0, 64, (n, PATCHES), generator=generator)
        features = F.normalize(base[0][pick] + 0.3 * torch.randn(n, PATCHES, WIDTH, generator=generator), dim=-1)
        for image in range(0, n, 3):
            features[image, : 5 * (image + 1)] = F.normalize(torch.randn(5 * (image + 1), WIDTH, generator=generator), dim=-1)
        all_same &= report(f"random real-size {index}", *both(features))
    all_same &= tiny_generated(report, both)
    print(f"bf16 features {'keep' if all_same else 'CHANGE'} the image ranking on these sets")


def tiny_generated(report, both) -> bool:
    """Generated categories through zsad-tiny (random weights): the tap tokens as MuSc
    builds them (standardised, degree 3)."""
    import tempfile
    from pathlib import Path

    from zsad.data import build_dataset
    from zsad.data.synth import generate_mvtec_like
    from zsad.methods.build import build_detector
    from zsad.methods.musc.lnamd import aggregate

    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    same = True
    with tempfile.TemporaryDirectory() as folder:
        generate_mvtec_like(Path(folder), categories=["disc", "carpet", "tile"], n_train=1, n_good=8, n_defect_per_kind=2, size=128)
        detector = build_detector("musc", backbone="zsad-tiny", weights="random", image_size=128)
        dataset = build_dataset(f"mvtec:{folder}", split="test", image_size=128)
        for key in ("disc", "carpet", "tile"):
            images = torch.stack([dataset[i]["image"] for i, s in enumerate(dataset.samples) if s.class_name == key])
            tokens, _ = detector.set_tokens(images)
            for tap in detector.taps:
                same &= report(f"generated {key}, block {tap}", *both(aggregate(tokens[tap], detector.backbone.grid, 3)))
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("msm")
    one.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100])
    one.add_argument("--measure-up-to", type=int, default=20)
    one.add_argument("--block-mb", type=float, default=256.0)
    one.add_argument("--device", default="cpu")
    sub.add_parser("backbone").add_argument("--images", type=int, default=2)
    sub.add_parser("bf16").add_argument("--sets", type=int, default=3)
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(one_msm(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])))
        return
    args = parser.parse_args()
    {"msm": msm, "backbone": backbone, "bf16": bf16_check}[args.command](args)


if __name__ == "__main__":
    main()
