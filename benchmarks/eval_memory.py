"""Peak memory of the pixel metrics of one class: maps held in memory vs spilled to disk.

    python benchmarks/eval_memory.py [--size 518] [--images 100,1000] [--chunk-mb 64]

Synthetic maps (uniform noise plus a raised disc where the mask is; float32, like
``zsad test``'s) and disc masks, made one image at a time, are handed to either

* ``in memory``: a list of maps, stacked, then ``zsad.metrics.pixel_metrics`` (what
  ``zsad test`` did before), or
* ``spilled``: ``SpilledMaps`` (a temporary file) and ``pixel_metrics_streamed``
  (what it does now).

Each run is a fresh process; the table gives its peak resident memory above the
memory after imports (``ru_maxrss``), the time, and whether the two paths' metrics are
identical. No GPU involved, nothing read from outside the repository.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zsad.engine.map_spill import SpilledMaps
from zsad.metrics import pixel_metrics, pixel_metrics_streamed


def synthetic_pair(index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) float32 map and bool disc mask (empty for every third image)."""
    rng = np.random.default_rng(index)
    mask = np.zeros((size, size), dtype=bool)
    if index % 3:
        y, x = np.ogrid[:size, :size]
        cy, cx = rng.integers(0, size, 2)
        radius = rng.uniform(0.03, 0.12) * size
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    anomaly_map = (rng.random((size, size), dtype=np.float32) + np.float32(0.3) * mask).astype(np.float32)
    return anomaly_map, mask


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(path: str, images: int, size: int, chunk_mb: int) -> None:
    baseline = peak_rss_mb()
    start = time.perf_counter()
    if path == "memory":
        maps, masks = [], []
        for index in range(images):
            anomaly_map, mask = synthetic_pair(index, size)
            maps.append(anomaly_map)
            masks.append(mask)
        metrics = pixel_metrics(np.stack(maps), np.stack(masks))
    else:
        with tempfile.TemporaryDirectory(prefix="zsad-bench-") as folder:
            store = SpilledMaps(Path(folder), "class", (size, size))
            for index in range(images):
                store.append(*synthetic_pair(index, size))
            store.close()
            metrics = pixel_metrics_streamed(lambda: store.chunks(chunk_mb * 2**20))
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": peak_rss_mb() - baseline, "seconds": seconds, "metrics": metrics}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=518, help="map side in pixels")
    parser.add_argument("--images", default="100,1000", help="comma-separated class sizes")
    parser.add_argument("--chunk-mb", type=int, default=64, help="maps read back per chunk (spilled path)")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.size, args.chunk_mb)
        return
    counts = [int(n) for n in args.images.split(",")]
    print(f"{args.size} x {args.size} float32 maps, chunks of {args.chunk_mb} MB; peak RSS above the post-import baseline")
    print(f"| {'images':>6} | {'maps size MB':>12} | {'in memory: peak MB':>18} | {'s':>6} | "
          f"{'spilled: peak MB':>16} | {'s':>6} | {'same metrics':>12} |")
    print(f"|{'-' * 8}|{'-' * 14}|{'-' * 20}|{'-' * 8}|{'-' * 18}|{'-' * 8}|{'-' * 14}|")
    for images in counts:
        results = {}
        for path in ("memory", "spilled"):
            command = [sys.executable, __file__, "--size", str(args.size), "--chunk-mb", str(args.chunk_mb),
                       "--child", path, str(images)]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            results[path] = json.loads(completed.stdout.strip().splitlines()[-1])
        memory, spilled = results["memory"], results["spilled"]
        maps_mb = images * args.size * args.size * 4 / 2**20
        print(f"| {images:>6} | {maps_mb:>12.0f} | {memory['peak_mb']:>18.0f} | {memory['seconds']:>6.1f} | "
              f"{spilled['peak_mb']:>16.0f} | {spilled['seconds']:>6.1f} | "
              f"{str(memory['metrics'] == spilled['metrics']):>12} |")


if __name__ == "__main__":
    main()
