"""Images per second of `zsad predict-many` (Ray Data, 1 and 2 CPU actors) against
plain `zsad predict`, measured in one run (issue 17 §2).

Every command runs as a whole process (Ray's start-up, model build and writes
included), on two sets of generated images of ``--small`` and ``--large`` images; the
difference between the two sizes gives the steady-state rate without the fixed
start-up cost. The model is zsad-tiny with random weights at ``--image-size`` (a
pipeline timing, not a result). Plain `zsad predict` always writes an overlay and a
raw map per image; predict-many runs with its defaults (no maps, no overlays).

    python benchmarks/predict_many.py            # 60 and 900 images, ~3-4 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODEL = ["--method", "zeroshot", "--backbone", "zsad-tiny", "--weights", "random", "--device", "cpu"]


def write_images(folder: Path, count: int, side: int, seed: int = 0) -> Path:
    """``count`` random RGB PNGs of ``side`` pixels under ``folder``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return folder


def commands(images: Path, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    common = [*MODEL, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--overwrite"]
    zsad = [sys.executable, "-m", "zsad"]
    many = [*zsad, "predict-many", str(images), "--quiet", "--chunk-size", str(args.chunk_size), *common]
    return {
        "zsad predict": [*zsad, "predict", str(images), "--out", str(out / "plain"), *common],
        "predict-many --actors 1": [*many, "--out", str(out / "many1"), "--actors", "1"],
        "predict-many --actors 2": [*many, "--out", str(out / "many2"), "--actors", "2"],
    }


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    completed = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=60, help="images in the small set")
    parser.add_argument("--large", type=int, default=900, help="images in the large set")
    parser.add_argument("--file-size", type=int, default=128, help="side of the generated PNGs")
    parser.add_argument("--image-size", type=int, default=64, help="model input side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=64, help="predict-many images per shard")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zsad-bench-many-"))
    try:
        sets = {size: write_images(root / f"images{size}", size, args.file_size) for size in (args.small, args.large)}
        seconds: dict[str, dict[int, float]] = {}
        # untimed: warms the page cache and Ray's first start-up, which otherwise lands on the small set
        wall_time(commands(sets[args.small], root / "warmup", args)["predict-many --actors 1"])
        for size, images in sets.items():  # the commands interleaved within each size
            for label, command in commands(images, root / f"out{size}", args).items():
                seconds.setdefault(label, {})[size] = wall_time(command)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"zsad-tiny random weights, {args.image_size} px, batch {args.batch_size}, CPU; whole processes")
    print(f"{'command':26s} {'s/' + str(args.small):>8s} {'s/' + str(args.large):>8s} {'img/s':>7s} {'steady':>7s} {'vs predict':>10s}")
    base_rate = base_steady = None
    for label, times in seconds.items():
        rate = args.large / times[args.large]
        extra = times[args.large] - times[args.small]
        steady = (args.large - args.small) / extra if extra > 0 else float("nan")  # nan: noise beat the extra work
        base_rate, base_steady = base_rate or rate, base_steady or steady
        print(
            f"{label:26s} {times[args.small]:8.1f} {times[args.large]:8.1f} {rate:7.1f} {steady:7.1f} "
            f"{rate / base_rate:5.2f}x/{steady / base_steady:4.2f}x"
        )
    print("img/s = large set / its wall time; steady = extra images / extra seconds (start-up removed);")
    print("vs predict = whole-process ratio / steady-state ratio")


if __name__ == "__main__":
    main()
