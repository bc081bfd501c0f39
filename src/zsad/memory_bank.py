"""Nearest-neighbour search in a patch-feature memory bank, in bounded memory.

A memory bank holds the patch features of a few normal reference images. A test patch's
distance to the bank is ``(1 - max cos) / 2`` over the bank's patches, in [0, 1]: 0 for a
patch that also occurs in a reference, 1 for the exact opposite direction.

The search runs as matrix products over blocks of (query rows x bank columns) whose size
never exceeds ``max_block_elements``, whatever the number of queries or references, so
more shots cost time but not more working memory.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 22  # 4 M similarities = 16 MB in fp32


def block_shape(n_queries: int, n_bank: int, max_block_elements: int) -> tuple[int, int]:
    """(rows, cols) of one similarity block: rows * cols <= max_block_elements, as many
    columns as fit (up to the whole bank), then as many rows as the cap allows (>= 1)."""
    if max_block_elements < 1:
        raise ValueError(f"max_block_elements must be >= 1, got {max_block_elements}")
    cols = max(1, min(n_bank, max_block_elements))
    rows = max(1, min(n_queries, max_block_elements // cols))
    return rows, cols


def _spans(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def similarity_block(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(r, d) x (c, d) unit vectors -> (r, c) cosine similarities (one matrix product)."""
    return queries @ bank.T


def nearest_distance(
    queries: torch.Tensor, bank: torch.Tensor, max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS
) -> torch.Tensor:
    """Distance of every query to its nearest bank vector.

    queries: (M, d), bank: (N, d), any scale (both are L2-normalised here).
    Returns (M,) values ``(1 - max_n cos(q, b_n)) / 2`` in [0, 1].
    """
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty: give at least one reference image")
    if queries.shape[-1] != bank.shape[-1]:
        raise ValueError(f"feature sizes differ: queries {queries.shape[-1]}, bank {bank.shape[-1]}")
    queries = F.normalize(queries.float(), dim=-1)
    bank = F.normalize(bank.float().to(queries.device), dim=-1)
    rows, cols = block_shape(queries.shape[0], bank.shape[0], max_block_elements)
    best = torch.full((queries.shape[0],), -1.0, device=queries.device)
    for row_span in _spans(queries.shape[0], rows):
        block_query = queries[row_span]
        for col_span in _spans(bank.shape[0], cols):
            similarity = similarity_block(block_query, bank[col_span]).amax(dim=1)
            best[row_span] = torch.maximum(best[row_span], similarity)
    return ((1.0 - best) / 2.0).clamp(0.0, 1.0)
