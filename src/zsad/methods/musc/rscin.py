"""RsCIN: one step of re-scoring with a constrained image-level neighbourhood (spec §4)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...errors import InvalidInputError


def rescore(scores: torch.Tensor, embeddings: torch.Tensor, windows: Sequence[int]) -> torch.Tensor:
    """scores (N,) raw image scores, embeddings (N, d) image embeddings -> (N,) in [0, 1].

    a~ = min-max(a) over the set (all zeros when every score is equal); W = cosine
    similarities of the embeddings (self = 1); for each window k (clipped to N) keep the
    k largest entries of each row of W (self included), divide each row by its sum and
    average a~ with those weights; the output is the mean over the windows. k = 1 is the
    identity on a~. Invariant to a -> c a + b (c > 0), permutation-equivariant."""
    if not windows:
        raise InvalidInputError("RsCIN needs at least one window size")
    scores = scores.double()
    span = scores.max() - scores.min()
    if span <= 0:
        return torch.zeros_like(scores, dtype=torch.float32)
    normalised = (scores - scores.min()) / span
    unit = F.normalize(embeddings.double(), dim=-1)
    similarity = unit @ unit.T  # (N, N)
    n = scores.shape[0]
    outputs = []
    for window in windows:
        k = min(int(window), n)
        top = similarity.topk(k, dim=1)
        kept = torch.zeros_like(similarity).scatter_(1, top.indices, top.values)
        weights = kept / kept.sum(dim=1, keepdim=True)
        outputs.append(weights @ normalised)
    return torch.stack(outputs).mean(dim=0).clamp(0, 1).float()
