"""Few-shot mode: time per image vs the number of references K, and a 0/1/2/4-shot
pipeline check on generated categories.

    python benchmarks/fewshot.py [--out /tmp/zsad-fewshot] [--image-size 128] [--seeds 0 1 2]
        [--methods zeroshot moeclip]

Everything uses `zsad-tiny` with RANDOM weights (MoECLIP untrained), so the metrics are a
pipeline check, not a result: they show that references flow through the memory bank
and change the maps. Timings: wall clock and process CPU time per image, measured in this one run (batch
of 8, after one warm-up batch); the ratio to the zero-shot time uses CPU time.
The ± is the population standard deviation over the seeds.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from zsad.api import Predictor, build_detector
from zsad.data.synth import TEST_CATEGORIES, generate_mvtec_like
from zsad.engine.fewshot import run_fewshot_test, with_references
from zsad.engine.testing import run_test
from zsad.methods.fewshot import FewShotSettings
from zsad.text import ClassNames

METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def _predictor(method: str, image_size: int) -> Predictor:
    torch.manual_seed(0)
    model = build_detector(method, backbone="zsad-tiny", weights="random", image_size=image_size, for_training=True)
    return Predictor(model, torch.device("cpu"), ClassNames.load())


def seconds_per_image(predictor: Predictor, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image; CPU time is the steadier figure on a shared machine."""
    names = ["object"] * images.shape[0]
    with torch.no_grad():
        predictor.detector(images, names)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            predictor.detector(images, names)
    count = repeats * images.shape[0]
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def timing_table(method: str, args) -> None:
    predictor = _predictor(method, args.image_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, args.image_size, args.image_size, generator=generator)
    base_wall, base_cpu = seconds_per_image(predictor, images, args.repeats)
    print(f"\n{method}: time per image vs K ({args.image_size} px, batch 8, CPU, {torch.get_num_threads()} threads)")
    print(f"{'K':>4}{'wall ms':>10}{'CPU ms':>10}{'CPU x zero-shot':>17}")
    print(f"{0:>4}{1000 * base_wall:>10.2f}{1000 * base_cpu:>10.2f}{1.0:>17.2f}")
    for shots in (1, 2, 4, 8, 16):
        references = torch.randn(shots, 3, args.image_size, args.image_size, generator=generator)
        few_shot = with_references(predictor, references, FewShotSettings())
        wall, cpu = seconds_per_image(few_shot, images, args.repeats)
        print(f"{shots:>4}{1000 * wall:>10.2f}{1000 * cpu:>10.2f}{cpu / base_cpu:>17.2f}")


def accuracy_table(method: str, spec: str, args) -> None:
    rows = {}
    predictor = _predictor(method, args.image_size)
    rows[0] = (
        {m: run_test(predictor, spec, args.out / method / "k0", overwrite=True, show_progress=False).report["mean"][m] for m in METRICS},
        None,
    )
    for shots in (1, 2, 4):
        report = run_fewshot_test(
            predictor, spec, args.out / method / f"k{shots}", shots, args.seeds, FewShotSettings(), overwrite=True, show_progress=False
        )
        rows[shots] = (report["mean"], report["few_shot"]["std_over_seeds"])
    print(f"\n{method}: 0/1/2/4 shots on unseen generated categories, mean ± std over seeds {args.seeds} (PIPELINE CHECK)")
    print(f"{'K':>3}" + "".join(f"{m:>18}" for m in METRICS))
    for shots, (mean, std) in rows.items():
        cells = [
            f"{100 * mean[m]:.1f}" + ("" if std is None else f" ± {100 * std[m]:.1f}") if mean.get(m) is not None else "n/a"
            for m in METRICS
        ]
        print(f"{shots:>3}" + "".join(f"{c:>18}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zsad-fewshot"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "moeclip"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    print("RANDOM WEIGHTS (zsad-tiny): pipeline check, not a result.")
    data = args.out / "data"
    generate_mvtec_like(data, categories=list(TEST_CATEGORIES), size=args.image_size, n_train=8, n_good=4, n_defect_per_kind=2, seed=1)
    for method in args.methods:
        timing_table(method, args)
        accuracy_table(method, f"mvtec:{data}", args)


if __name__ == "__main__":
    main()
