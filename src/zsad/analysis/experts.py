"""What the experts of a routed method do: patch selection, inter-expert similarity,
utilisation, and the visual statistics of the patches each expert takes (MoECLIP Fig. 3,
5, 9, 10, 12-15, Tab. 14).

The functions take the :class:`~zsad.methods.base.Routing` of the patch tokens that a
method reports in ``DetectorOutput.routing`` and return plain tensors / arrays; :class:`ExpertAnalysisAccumulator`
sums them over batches and data sets. Nothing here reads or writes files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ..methods.base import Routing
from .patches import PATCH_STATISTICS, patch_statistics

__all__ = [
    "ExpertAnalysis",
    "ExpertAnalysisAccumulator",
    "expert_similarity",
    "selection_maps",
    "shares",
    "utilisation",
]


def selection_maps(routing: Routing, ranks: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Patch-selection maps: each patch's r-th choice of expert and its weight.

    Args:
        routing: patch-token routing of B images.
        ranks: how many choices to map (1 = top-1, 2 = top-1 and top-2); at most k.

    Returns:
        experts: int64 (B, R, h, w) expert ids in [0, K), R = min(ranks, k);
        weights: float32 (B, R, h, w) the renormalised routing weight of that choice.
    """
    count = min(ranks, routing.topk_index.shape[-1])
    batch = routing.topk_index.shape[0]
    shape = (batch, *routing.grid, count)
    experts = routing.topk_index[..., :count].reshape(shape).permute(0, 3, 1, 2)
    weights = routing.topk_weight[..., :count].reshape(shape).permute(0, 3, 1, 2)
    return experts.long().cpu().numpy(), weights.float().cpu().numpy()


def expert_similarity(expert_outputs: torch.Tensor, topk_index: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image inter-expert cosine similarity, summed over the images (Fig. 5, 10).

    For image b and expert n, ``m_bn`` is the mean of ``E_n(x_l)`` over the patches l
    that have n among their top-k. The entry (n, m) of image b is ``cos(m_bn, m_bm)``.
    An expert without patches in an image, or whose mean is the zero vector (it has no
    direction, e.g. an untrained expert), is left out of that image's rows and columns.

    Args:
        expert_outputs: (B, L, K, d) expert outputs of the patch tokens.
        topk_index: (B, L, k) their selected experts.

    Returns:
        total: float64 (K, K) sum of the per-image cosines over the images where both
            experts count; symmetric, diagonal equal to the count.
        count: int64 (K, K) number of such images. ``total / count`` is the data-set mean.
    """
    outputs = expert_outputs.float()
    membership = torch.zeros(outputs.shape[:3], dtype=outputs.dtype, device=outputs.device)
    membership.scatter_(-1, topk_index.long(), 1.0)  # (B, L, K)
    patches = membership.sum(dim=1).double()  # (B, K)
    sums = torch.einsum("blk,blkd->bkd", membership, outputs).double()
    means = sums / patches.clamp(min=1).unsqueeze(-1)
    norms = torch.linalg.vector_norm(means, dim=-1)
    present = (patches > 0) & (norms > 0)  # (B, K)
    unit = means / torch.where(present, norms, torch.ones_like(norms)).unsqueeze(-1)
    cosine = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)  # (B, K, K)
    pair = present.unsqueeze(2) & present.unsqueeze(1)
    total = torch.where(pair, cosine, torch.zeros_like(cosine)).sum(dim=0)
    count = pair.sum(dim=0)
    return total.cpu().numpy(), count.cpu().numpy().astype(np.int64)


def utilisation(topk_index: torch.Tensor, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each expert is chosen (Fig. 9).

    Args:
        topk_index: (B, L, k) selected experts of the patch tokens.
        num_experts: K.

    Returns:
        top1: int64 (K,) number of patches whose top-1 expert is n (sums to B * L);
        topk: int64 (K,) number of top-k slots that hold n (sums to B * L * k). The k
            experts of a patch differ, so ``topk[n]`` is also the number of patches
            that use n at all.
    """
    flat = topk_index.reshape(-1, topk_index.shape[-1]).long()
    top1 = torch.bincount(flat[:, 0], minlength=num_experts)
    topk = torch.bincount(flat.reshape(-1), minlength=num_experts)
    return top1.cpu().numpy().astype(np.int64), topk.cpu().numpy().astype(np.int64)


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts ``(K,)`` -> fractions ``(K,)`` summing to 1 (NaN when there is nothing)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full_like(counts, np.nan)


@dataclass
class _LayerTotals:
    similarity_sum: np.ndarray  # (K, K) float64
    similarity_count: np.ndarray  # (K, K) int64
    top1: np.ndarray  # (K,) int64
    topk: np.ndarray  # (K,) int64

    @classmethod
    def zeros(cls, num_experts: int) -> "_LayerTotals":
        square = (num_experts, num_experts)
        return cls(np.zeros(square), np.zeros(square, np.int64), np.zeros(num_experts, np.int64), np.zeros(num_experts, np.int64))

    def __iadd__(self, other: "_LayerTotals") -> "_LayerTotals":
        self.similarity_sum = self.similarity_sum + other.similarity_sum
        self.similarity_count = self.similarity_count + other.similarity_count
        self.top1 = self.top1 + other.top1
        self.topk = self.topk + other.topk
        return self


@dataclass
class _DatasetTotals:
    images: int
    layers: dict[int, _LayerTotals]
    statistic_sums: dict[str, np.ndarray]  # name -> (K,) sum over top-1 patches
    statistic_patches: np.ndarray  # (K,) int64 top-1 patches per expert


@dataclass
class ExpertAnalysis:
    """The summed results. ``datasets`` keeps the data-set order of the run.

    Per data set (or pooled, ``dataset=None``) and MoE block:
    :meth:`similarity` (K, K) mean cosine, NaN where no image counts;
    :meth:`similarity_count` (K, K) images behind each entry;
    :meth:`utilisation` top-1 / top-k shares (K,) and counts;
    :meth:`statistics` for ``statistics_block``: per expert the mean gradient, std and
    entropy of its top-1 patches, and their number.
    """

    blocks: tuple[str, ...]
    num_experts: int
    top_k: int
    statistics_block: str
    datasets: list[str]
    _totals: dict[str, _DatasetTotals] = field(repr=False)

    def images(self, dataset: str | None = None) -> int:
        return sum(self._totals[name].images for name in self._names(dataset))

    def _names(self, dataset: str | None) -> list[str]:
        if dataset is None:
            return list(self.datasets)
        if dataset not in self._totals:
            raise KeyError(f"no data set {dataset!r}; have {self.datasets}")
        return [dataset]

    def _layer(self, dataset: str | None, block: str) -> _LayerTotals:
        if block not in self.blocks:
            raise KeyError(f"block {block} has no MoE layer; blocks: {self.blocks}")
        combined = _LayerTotals.zeros(self.num_experts)
        for name in self._names(dataset):
            combined += self._totals[name].layers[block]
        return combined

    def similarity(self, block: str, dataset: str | None = None) -> np.ndarray:
        totals = self._layer(dataset, block)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(totals.similarity_count > 0, totals.similarity_sum / totals.similarity_count, np.nan)

    def similarity_count(self, block: str, dataset: str | None = None) -> np.ndarray:
        return self._layer(dataset, block).similarity_count

    def utilisation(self, block: str, dataset: str | None = None) -> dict[str, np.ndarray]:
        """``top1_share``, ``topk_share`` (K,) fractions (each sums to 1) and the counts
        ``top1_count``, ``topk_count`` (K,)."""
        totals = self._layer(dataset, block)
        return {
            "top1_share": shares(totals.top1),
            "topk_share": shares(totals.topk),
            "top1_count": totals.top1,
            "topk_count": totals.topk,
        }

    def statistics(self, dataset: str | None = None) -> dict[str, np.ndarray]:
        """``gradient``, ``std``, ``entropy`` (K,) means over each expert's top-1 patches
        (NaN for an expert without patches) and ``patches`` (K,) their number."""
        names = self._names(dataset)
        patches = sum(self._totals[name].statistic_patches for name in names)
        result: dict[str, np.ndarray] = {"patches": patches}
        for statistic in PATCH_STATISTICS:
            total = sum(self._totals[name].statistic_sums[statistic] for name in names)
            with np.errstate(divide="ignore", invalid="ignore"):
                result[statistic] = np.where(patches > 0, total / np.maximum(patches, 1), np.nan)
        return result


class ExpertAnalysisAccumulator:
    """Sums the expert analyses over batches, per data set.

    Args:
        blocks: the tapped blocks that carry a MoE layer.
        num_experts: K.
        top_k: k.
        statistics_block: the block whose top-1 routing decides the Tab. 14 statistics.
        patch_size: ViT patch side in pixels.
    """

    def __init__(self, blocks: tuple[str, ...], num_experts: int, top_k: int, statistics_block: str, patch_size: int):
        if statistics_block not in blocks:
            raise ValueError(f"block {statistics_block} has no MoE layer; choose one of {list(blocks)}")
        self.blocks = tuple(blocks)
        self.num_experts = num_experts
        self.top_k = top_k
        self.statistics_block = statistics_block
        self.patch_size = patch_size
        self._totals: dict[str, _DatasetTotals] = {}

    def add_dataset(self, name: str) -> _DatasetTotals:
        """Register a data set (kept in the results even if none of its images is added)."""
        if name not in self._totals:
            self._totals[name] = _DatasetTotals(
                images=0,
                layers={block: _LayerTotals.zeros(self.num_experts) for block in self.blocks},
                statistic_sums={statistic: np.zeros(self.num_experts) for statistic in PATCH_STATISTICS},
                statistic_patches=np.zeros(self.num_experts, np.int64),
            )
        return self._totals[name]

    def add(self, dataset: str, routing: Mapping[str, Routing], gray_images: np.ndarray) -> None:
        """Add one batch of B images of ``dataset``.

        Args:
            routing: block -> patch-token routing with dense ``expert_outputs``.
            gray_images: uint8 (B, S, S) grayscale model inputs (for the statistics).
        """
        totals = self.add_dataset(dataset)
        for block in self.blocks:
            layer = routing[block]
            if layer.expert_outputs is None:
                raise ValueError(f"block {block}: expert outputs are missing; run the model within keeping_expert_outputs()")
            similarity_sum, similarity_count = expert_similarity(layer.expert_outputs, layer.topk_index)
            top1, topk = utilisation(layer.topk_index, self.num_experts)
            totals.layers[block] += _LayerTotals(similarity_sum, similarity_count, top1, topk)
        top1_experts = routing[self.statistics_block].topk_index[..., 0].cpu().numpy()  # (B, L)
        if len(gray_images) != len(top1_experts):
            raise ValueError(f"{len(gray_images)} images for a routing batch of {len(top1_experts)}")
        for gray, experts in zip(gray_images, top1_experts):
            values = patch_statistics(gray, self.patch_size)
            if values["std"].shape != experts.shape:
                raise ValueError(f"{values['std'].shape[0]} image patches but {experts.shape[0]} patch tokens")
            totals.statistic_patches += np.bincount(experts, minlength=self.num_experts)
            for statistic in PATCH_STATISTICS:
                totals.statistic_sums[statistic] += np.bincount(experts, weights=values[statistic], minlength=self.num_experts)
        totals.images += len(gray_images)

    def result(self) -> ExpertAnalysis:
        return ExpertAnalysis(self.blocks, self.num_experts, self.top_k, self.statistics_block, list(self._totals), self._totals)
