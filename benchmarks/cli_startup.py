"""Wall time of `zsad` commands that should answer at once (issue 11, item 12).

Each command runs in a fresh interpreter, best of ``--repeats``; ``python -c pass`` is
the floor and ``import torch`` the cost the command line avoids.

    python benchmarks/cli_startup.py
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "zsad --help": [sys.executable, "-m", "zsad", "--help"],
    "zsad --version": [sys.executable, "-m", "zsad", "--version"],
    "zsad predict --image-size 0 (argument error)": [sys.executable, "-m", "zsad", "predict", "x.png", "--out", "o", "--image-size", "0"],
    "zsad train --help": [sys.executable, "-m", "zsad", "train", "--help"],
    "zsad predict --help (lists the registry's methods)": [sys.executable, "-m", "zsad", "predict", "--help"],
}


def best_wall_time(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for label, command in COMMANDS.items():
        print(f"{best_wall_time(command, args.repeats):6.2f} s  {label}")


if __name__ == "__main__":
    main()
