"""Load test of `zsad serve` on loopback, against `zsad predict` on the same images.

    python benchmarks/serve_load.py [--clients 8] [--requests 25] [--image-size 128] [--out /tmp/zsad-serve-load]

Starts `zsad serve` (zsad-tiny, RANDOM weights: the scores mean nothing, the timings are
what is measured) in a subprocess, sends clients x requests single-image POST /predict
requests from concurrent threads, and prints every request's outcome, the p50 / p99
latency and images/s. Then scores the same images with the library path behind
`zsad predict` (predict_files: overlays, maps, scores.csv) in this process, model already
loaded, and with the `zsad predict` command (wall time including start-up).
Server, clients and predict share this machine's cores; figures are from one run.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"{index:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"zsad serve exited with status {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("zsad serve did not come up")


def load_test(url: str, paths: list[Path], clients: int, requests: int) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        with httpx.Client(timeout=120) as session:
            for number in range(requests):
                path = paths[(worker * requests + number) % len(paths)]
                start = time.perf_counter()
                response = session.post(url + "/predict", files=[("file", (path.name, path.read_bytes(), "image/png"))])
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zsad-serve-load"))
    args = parser.parse_args()
    total = args.clients * args.requests
    paths = make_images(args.out / "images", total, args.image_size)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "zsad", "serve", *TINY, "--image-size", str(args.image_size), "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-queue", str(4 * total)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_until_up(url, server)
        latencies, statuses, wall = load_test(url, paths, args.clients, args.requests)
        health = httpx.get(url + "/health").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    answered = sum(1 for s in statuses if s == 200)
    quantiles = statistics.quantiles(latencies, n=100)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"RANDOM WEIGHTS (zsad-tiny, {args.image_size} px): timings only. CPU threads per process: {threads}")
    others = sorted(set(statuses) - {200})
    print(f"serve: {args.clients} clients x {args.requests} requests = {total}; answered 200: {answered}; other: {others}")
    print(f"serve: latency p50 {1000 * quantiles[49]:.0f} ms, p99 {1000 * quantiles[98]:.0f} ms; {total / wall:.1f} images/s")
    print(f"serve: {health['forward_passes']} forward passes for {health['images_scored']} images "
          f"(mean batch {health['images_scored'] / max(1, health['forward_passes']):.1f}, largest {health['largest_batch']})")

    warnings.filterwarnings("ignore", message="RANDOM WEIGHTS")
    import torch

    from zsad.api import load
    from zsad.engine.prediction import predict_files

    predictor = load("zeroshot", backbone="zsad-tiny", weights="random", image_size=args.image_size, device="cpu")
    predictor.predict(paths[:8])  # warm-up
    start = time.perf_counter()
    predict_files(predictor, paths, args.out / "predict-lib", 0.5, batch_size=args.max_batch, overwrite=True, show_progress=False)
    library = time.perf_counter() - start
    print(f"predict (library, model loaded, torch {torch.get_num_threads()} threads): {total / library:.1f} images/s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zsad", "predict", str(args.out / "images"), "--out", str(args.out / "predict-cli"),
                    *TINY, "--image-size", str(args.image_size), "--overwrite", "--quiet"], check=True, capture_output=True)
    cli = time.perf_counter() - start
    print(f"zsad predict (command, incl. start-up): {cli:.1f} s = {total / cli:.1f} images/s")
    print(f"ratio serve / library predict images/s: {(total / wall) / (total / library):.2f}")


if __name__ == "__main__":
    main()
