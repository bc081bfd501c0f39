"""Time `zsad data synth`'s default generation (every category, default sizes and counts).

Prints the wall-clock and CPU time of one run and the number of files written; nothing is
asserted (timings depend on the machine and its load).

Usage: PYTHONPATH=src python benchmarks/synth_generation.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zsad.data.synth import generate_mvtec_like


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, each into a fresh folder")
    args = parser.parse_args()
    for run in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = time.perf_counter(), time.process_time()
            categories = generate_mvtec_like(Path(folder))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            files = sum(1 for path in Path(folder).rglob("*") if path.is_file())
        print(f"run {run}: {len(categories)} categories, {files} files, wall {wall:.2f} s, cpu {cpu:.2f} s")


if __name__ == "__main__":
    main()
