"""Benchmark zsad.metrics.pixel_metrics at MVTec-AD scale and against scikit-learn.

Generates N smooth random anomaly maps (S x S, float32) where about 2/3 of the
images are anomalous, each with 1-5 elliptical ground-truth blobs (a few % of
its pixels) whose scores are raised. Then:

1. times ``pixel_metrics`` on all maps (wall clock) and reads the process peak
   RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the input
   arrays themselves); the maps are generated in place so generation does not
   set that peak;
2. optionally runs it again under ``tracemalloc`` to report the peak of the
   extra memory ``pixel_metrics`` itself allocates (numpy buffers are traced);
3. on the first ``--sklearn-n-maps`` maps, compares the time of our
   ``pixel_metrics`` (all four metrics, AUPRO included) with scikit-learn's
   ``roc_auc_score`` + ``average_precision_score`` (two metrics only), and
   checks AUROC, AP and F1-max agree.

Usage: PYTHONPATH=src python benchmarks/metrics_bench.py --n-maps 1725 --size 518
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from zsad.metrics import pixel_metrics

GIB = 1024**3


def generate_maps(n_maps: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return maps (N, S, S) float32 in [0, 1] and masks (N, S, S) bool, filled image by image."""
    rng = np.random.default_rng(seed)
    maps = np.empty((n_maps, size, size), dtype=np.float32)
    masks = np.zeros((n_maps, size, size), dtype=bool)
    coarse = 17
    for index in range(n_maps):
        noise = rng.random((coarse, coarse), dtype=np.float32) * 0.6
        maps[index] = ndimage.zoom(noise, size / coarse, order=3, grid_mode=True, mode="nearest")[:size, :size]
        if rng.random() < 2 / 3:
            for _ in range(rng.integers(1, 6)):
                _add_blob(maps[index], masks[index], rng)
        np.clip(maps[index], 0.0, 1.0, out=maps[index])
    return maps, masks


def _add_blob(score_map: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Mark a random ellipse (radii 3-12 % of the side) in mask (S, S) and raise its scores in place."""
    size = mask.shape[0]
    centre_r, centre_c = rng.integers(0, size, 2)
    radius_r, radius_c = rng.uniform(0.03, 0.12, 2) * size
    top, bottom = max(0, int(centre_r - radius_r)), min(size, int(centre_r + radius_r) + 1)
    left, right = max(0, int(centre_c - radius_c)), min(size, int(centre_c + radius_c) + 1)
    rows, cols = np.ogrid[top:bottom, left:right]
    blob = ((rows - centre_r) / radius_r) ** 2 + ((cols - centre_c) / radius_c) ** 2 <= 1.0
    mask[top:bottom, left:right] |= blob
    score_map[top:bottom, left:right][blob] += rng.uniform(0.1, 0.5)


def peak_rss_gib() -> float:
    """Process peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def current_rss_gib() -> float | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / GIB
    except OSError:
        return None


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def sklearn_pixel_scores(maps: np.ndarray, masks: np.ndarray) -> tuple[dict[str, float], float]:
    """sklearn AUROC + AP (timed together) and F1-max (untimed) on flattened pixels."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    labels, scores = masks.ravel(), maps.ravel()
    start = time.perf_counter()
    auroc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    seconds = time.perf_counter() - start
    precision, recall, _ = precision_recall_curve(labels, scores)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return {"pixel_auroc": auroc, "pixel_ap": ap, "pixel_f1max": float(f1.max())}, seconds


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}\n" + "-" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-maps", type=int, default=1725)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sklearn-n-maps", type=int, default=40, help="maps used for the sklearn comparison (0: skip)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the second, traced run")
    args = parser.parse_args()

    (maps, masks), generate_s = timed(generate_maps, args.n_maps, args.size, args.seed)
    n_pixels = maps.size
    anomalous_images = int(masks.any(axis=(1, 2)).sum())
    rss_before = current_rss_gib()

    result, metrics_s = timed(pixel_metrics, maps, masks)
    peak_after = peak_rss_gib()
    rows = [
        ("maps", f"{args.n_maps} x {args.size} x {args.size} float32 ({n_pixels / 1e6:.0f} M pixels)"),
        ("anomalous images", f"{anomalous_images} ({anomalous_images / args.n_maps:.0%})"),
        ("anomalous pixels", f"{masks.sum() / n_pixels:.2%}"),
        ("data generation [s]", f"{generate_s:.1f} (not part of the timing)"),
        ("pixel_metrics wall [s]", f"{metrics_s:.1f}   (bound 60 s: {'ok' if metrics_s <= 60 else 'EXCEEDED'})"),
        ("RSS before call [GiB]", "n/a" if rss_before is None else f"{rss_before:.2f} (inputs)"),
        ("peak RSS, ru_maxrss [GiB]", f"{peak_after:.2f}   (bound 6 GB: {'ok' if peak_after * GIB <= 6e9 else 'EXCEEDED'})"),
    ]
    if not args.no_tracemalloc:
        tracemalloc.start()
        pixel_metrics(maps, masks)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("extra peak, tracemalloc [GiB]", f"{traced_peak / GIB:.2f} (allocated by pixel_metrics)"))
    rows += [(name, f"{value:.6f}") for name, value in result.items()]
    print_table("pixel_metrics on all maps", rows)

    if args.sklearn_n_maps > 0:
        small_maps, small_masks = maps[: args.sklearn_n_maps], masks[: args.sklearn_n_maps]
        ours, ours_s = timed(pixel_metrics, small_maps, small_masks)
        reference, sklearn_s = sklearn_pixel_scores(small_maps, small_masks)
        differences = {name: abs(ours[name] - value) for name, value in reference.items()}
        agree = all(difference <= 1e-9 for difference in differences.values())
        rows = [
            ("pixels", f"{small_maps.size / 1e6:.1f} M"),
            ("ours: pixel_metrics, all 4 [s]", f"{ours_s:.2f}"),
            ("sklearn: roc_auc + AP [s]", f"{sklearn_s:.2f}"),
            ("time ratio ours / sklearn", f"{ours_s / sklearn_s:.3f}"),
        ]
        rows += [(f"|diff| {name}", f"{difference:.2e}") for name, difference in differences.items()]
        rows.append(("values agree (<= 1e-9)", "yes" if agree else "NO"))
        print_table(f"vs scikit-learn on the first {args.sklearn_n_maps} maps", rows)


if __name__ == "__main__":
    main()
