"""Peak memory of `zsad predict` on one very large image (issue 11, item 8).

Writes a synthetic image of ``--megapixels`` (JPEG and/or PNG), runs
``zsad predict`` on it in a child process, and reads that child's peak resident
memory (``ru_maxrss`` from ``os.wait4``). The same command on a 512 x 512 image
gives the baseline (interpreter, libraries, model), so the table shows what the
large image itself costs. Random weights: the scores do not matter here, only
memory and time.

    python benchmarks/large_image_memory.py                                   # zsad-tiny at 224
    python benchmarks/large_image_memory.py --backbone ViT-L-14-336 --image-size 518
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

Image.MAX_IMAGE_PIXELS = None  # we write the big image ourselves


def make_image(path: Path, megapixels: float) -> tuple[int, int]:
    """A smooth colour image of about ``megapixels`` (4:3), saved in the format of ``path``'s suffix."""
    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = int(width * 3 / 4)
    ramp = Image.linear_gradient("L").resize((width, height))
    picture = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    del ramp
    picture.save(path, quality=90) if path.suffix == ".jpg" else picture.save(path, compress_level=1)
    return width, height


def peak_rss_of_predict(image: Path, out: Path, model_args: list[str]) -> tuple[float, float, int]:
    """Run `zsad predict` on ``image``; return (peak RSS in MiB, seconds, exit status)."""
    command = [sys.executable, "-m", "zsad", "predict", str(image), "--out", str(out), "--quiet", "--device", "cpu", *model_args]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(stderr[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024, seconds, code  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="zsad-tiny")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--megapixels", type=float, default=100.0)
    parser.add_argument("--formats", default="jpg,png", help="comma-separated: jpg, png")
    args = parser.parse_args()
    model_args = ["--backbone", args.backbone, "--weights", "random", "--image-size", str(args.image_size)]
    print(f"model: {args.backbone} (random weights) at {args.image_size} px; image: {args.megapixels:g} MP")
    print(f"{'format':<7}{'image':>13}{'peak RSS':>11}{'baseline':>11}{'image cost':>12}{'time':>8}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for suffix in args.formats.split(","):
            big, small = root / f"big.{suffix}", root / f"small.{suffix}"
            width, height = make_image(big, args.megapixels)
            make_image(small, 512 * 512 / 1e6)
            base_rss, _, base_code = peak_rss_of_predict(small, root / f"out-small-{suffix}", model_args)
            rss, seconds, code = peak_rss_of_predict(big, root / f"out-big-{suffix}", model_args)
            status = "" if code == base_code == 0 else f"  (exit {code}/{base_code})"
            print(f"{suffix:<7}{f'{width}x{height}':>13}{rss:>8.0f} MB{base_rss:>8.0f} MB{rss - base_rss:>9.0f} MB{seconds:>7.1f}s{status}")
            big.unlink()


if __name__ == "__main__":
    main()
