"""Loading + augmenting one training sample: from the files vs from the resized-image cache.

    python benchmarks/data_loading.py [--data KIND:PATH] [--image-size 518] [--samples 64]

Without ``--data`` an MVTec-like set (256 px files) is generated into a temporary
folder. One process, no workers, CPU: the time a data-loading worker spends per sample.
``zsad train`` fills the cache once before the first epoch (``--no-cache-images`` turns
it off); the figure shows what every later epoch saves.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from zsad.data.synth import generate_mvtec_like
from zsad.engine.train_config import TrainingConfig
from zsad.engine.train_data import build_training_data


def seconds_per_sample(plain, cached, count: int) -> tuple[float, float]:
    """Mean seconds per item of each set, the two read in turn item by item (the same
    item and augmentation draws), so a change in machine load hits both alike."""
    totals = [0.0, 0.0]
    for index in range(count):
        for which, dataset in enumerate((plain, cached)):
            start = time.perf_counter()
            dataset[(1, index)]
            totals[which] += time.perf_counter() - start
    return totals[0] / count, totals[1] / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="KIND:PATH (default: a generated set)")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="zsad-data-bench-") as folder:
        spec = args.data
        if spec is None:
            root = Path(folder) / "mvtec"
            generate_mvtec_like(root, n_train=0, n_good=8, n_defect_per_kind=4, size=256, seed=0)
            spec = f"mvtec:{root}"
        config = TrainingConfig()
        plain = build_training_data([spec], args.image_size, config, cache_budget=0)
        count = min(args.samples, len(plain.dataset))
        start = time.perf_counter()
        cached = build_training_data([spec], args.image_size, config, cache_budget=2**62)
        fill = time.perf_counter() - start
        from_files, from_cache = seconds_per_sample(plain.dataset, cached.dataset, count)
    print(f"{spec if args.data else 'generated MVTec-like set, 256 px files'}, {args.image_size} px, {count} samples, "
          f"{args.threads} thread(s)")
    print(f"| {'per sample':<40} | {'ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 9}|")
    print(f"| {'decode + resize + augment (no cache)':<40} | {from_files * 1e3:>7.1f} |")
    print(f"| {'augment from the resized-image cache':<40} | {from_cache * 1e3:>7.1f} |")
    print(f"| {'filling the cache (once)':<40} | {fill / len(cached.dataset) * 1e3:>7.1f} |")
    print(f"ratio no cache / cache: {from_files / from_cache:.2f}")


if __name__ == "__main__":
    main()
