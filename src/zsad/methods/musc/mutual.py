"""MSM: mutual scoring of the patches of a set of images (spec §3), blocked and bounded.

For image i, patch m and every other image j: d_ij(m) = min over the patches n of j of
||z_i^m - z_j^n||. The patch score is the mean of the K smallest d_ij(m) over j != i,
K = max(1, floor(X (N - 1))). Unit vectors give ||a - b||^2 = 2 - 2 a.b, so a block of
query images against a block of reference images is one matrix product; its row maxima
give d_ij for the query images and its column maxima d_ji for the reference images (one
product serves both). No N x L x N x L block is ever held: a block of b x b' images holds
b L x b' L floats, with b b' chosen from ``block_bytes``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...errors import InvalidInputError

BlockReader = Callable[[int, int], torch.Tensor]  # (start, stop) -> (stop - start, L, C) unit vectors


def no_progress(done: int) -> None:
    """The default progress callback: reports nothing."""


def interval_size(n_images: int, fraction: float) -> int:
    """K = max(1, floor(fraction * (N - 1))): how many of the N - 1 other images are
    averaged (the reference's floor, but at least one so that N = 2..4 gives no NaN)."""
    if n_images < 2:
        raise InvalidInputError("mutual scoring needs at least two images: every image is scored against the others")
    return max(1, math.floor(fraction * (n_images - 1)))


def images_per_block(patches: int, block_bytes: int) -> int:
    """b: images per side of a square block so that the b L x b L float32 similarity
    block stays within ``block_bytes``. Refuses a budget below one image pair."""
    pair_bytes = 4 * patches * patches
    if block_bytes < pair_bytes:
        raise InvalidInputError(
            f"a distance block of {block_bytes} bytes is below one image pair ({pair_bytes} bytes for {patches} patches)"
        )
    return math.isqrt(block_bytes // pair_bytes)


def pair_minima(read: BlockReader, n_images: int, patches: int, block_bytes: int, device: torch.device,
                progress: Callable[[int], None] = no_progress) -> torch.Tensor:
    """(N, N, L) float32 table: [i, j, m] = min over n of ||z_i^m - z_j^n|| (i != j), +inf on
    the diagonal (self is never a reference). Blocks of b images per side (see
    :func:`images_per_block`); only blocks with j-block >= i-block are computed, each
    serving both orders. ``progress(k)`` is called with the number of block pairs done."""
    step = images_per_block(patches, block_bytes)
    table = torch.full((n_images, n_images, patches), float("inf"))
    starts = range(0, n_images, step)
    done = 0
    for first in starts:
        first_stop = min(first + step, n_images)
        queries = read(first, first_stop).to(device=device, dtype=torch.float32)
        rows = queries.reshape(-1, queries.shape[-1])  # (b L, C)
        for second in starts:
            if second < first:
                continue
            second_stop = min(second + step, n_images)
            refs = queries if second == first else read(second, second_stop).to(device=device, dtype=torch.float32)
            dots = torch.matmul(rows, refs.reshape(-1, refs.shape[-1]).T)  # (b L, b' L)
            dots = dots.view(first_stop - first, patches, second_stop - second, patches)
            forward = _distance(dots.amax(dim=3)).permute(0, 2, 1)  # (b, b', L): i's patches vs j
            backward = _distance(dots.amax(dim=1)).permute(1, 0, 2)  # (b', b, L): j's patches vs i
            table[first:first_stop, second:second_stop] = forward.cpu()
            table[second:second_stop, first:first_stop] = backward.cpu()
            del dots  # freed before the next product is allocated: one block alive at a time
            done += 1
            progress(done)
    table.diagonal(dim1=0, dim2=1).fill_(float("inf"))
    return table


def _distance(max_dot: torch.Tensor) -> torch.Tensor:
    """Largest dot product of unit vectors -> smallest Euclidean distance, in [0, 2]."""
    return torch.sqrt((2.0 - 2.0 * max_dot).clamp(min=0.0))


def interval_average(table: torch.Tensor, fraction: float, lower_fraction: float = 0.0) -> torch.Tensor:
    """(b, N, L) pair minima of b query images against all N (+inf where j = i) -> (b, L)
    patch scores: the mean of the order statistics floor(lower (N - 1)) + 1 .. K of d_ij(m)
    over j != i (lower = 0: the K smallest)."""
    n_images = table.shape[1]
    upper = interval_size(n_images, fraction)
    lower = min(math.floor(lower_fraction * (n_images - 1)), upper - 1)
    smallest = table.topk(upper, dim=1, largest=False).values  # (N, K, L), ascending
    return smallest[:, lower:].mean(dim=1)


def row_minima(read: BlockReader, first: int, first_stop: int, n_images: int, patches: int, block_bytes: int,
               device: torch.device) -> torch.Tensor:
    """(b, N, L) pair minima of query images first..first_stop against every image (+inf
    where j = i): the path for sets whose full (N, N, L) table exceeds its budget, at
    twice the products of :func:`pair_minima` (no block serves both orders)."""
    step = images_per_block(patches, block_bytes)
    queries = read(first, first_stop).to(device=device, dtype=torch.float32)
    rows = queries.reshape(-1, queries.shape[-1])
    table = torch.empty(first_stop - first, n_images, patches)
    for second in range(0, n_images, step):
        second_stop = min(second + step, n_images)
        refs = read(second, second_stop).to(device=device, dtype=torch.float32)
        dots = torch.matmul(rows, refs.reshape(-1, refs.shape[-1]).T).view(first_stop - first, patches, second_stop - second, patches)
        table[:, second:second_stop] = _distance(dots.amax(dim=3)).permute(0, 2, 1).cpu()
        del dots  # one block alive at a time
    for offset in range(first_stop - first):
        table[offset, first + offset] = float("inf")
    return table


def mutual_scores(read: BlockReader, n_images: int, patches: int, fraction: float, lower_fraction: float = 0.0,
                  block_bytes: int = 256 * 2**20, table_bytes: int = 1 * 2**30, device: torch.device | str = "cpu",
                  progress: Callable[[int], None] = no_progress) -> torch.Tensor:
    """One feature set (N, L, C) of unit vectors, read block by block -> (N, L) patch
    scores in [0, 2]. Matrix products in full float32 (TF32 off on CUDA: near zero, d =
    sqrt(2 - 2 dot) amplifies any error of the dot product).

    Memory beyond the features: one similarity block (``block_bytes``) and the (N, N, L)
    float32 table of pair minima while it fits ``table_bytes``; a larger set is scored
    query block by query block, each reduced to its K smallest at once (b x N x L)."""
    device = torch.device(device)
    with _full_float32(device):
        if 4 * n_images * n_images * patches <= table_bytes:
            table = pair_minima(read, n_images, patches, block_bytes, device, progress)
            return interval_average(table, fraction, lower_fraction)
        step = images_per_block(patches, block_bytes)
        scores = []
        for done, first in enumerate(range(0, n_images, step), start=1):
            stop = min(first + step, n_images)
            scores.append(interval_average(row_minima(read, first, stop, n_images, patches, block_bytes, device), fraction, lower_fraction))
            progress(done)
        return torch.cat(scores)


def block_pairs(n_images: int, patches: int, block_bytes: int, table_bytes: int) -> int:
    """How many progress steps :func:`mutual_scores` reports (block pairs, or query
    blocks when the table exceeds its budget)."""
    blocks = math.ceil(n_images / images_per_block(patches, block_bytes))
    return blocks * (blocks + 1) // 2 if 4 * n_images * n_images * patches <= table_bytes else blocks


class _full_float32:
    """TF32 matrix products off on CUDA inside the block, the previous setting restored."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False
