"""MuSc: zero-shot anomaly scores by mutual scoring of unlabeled images (ICLR 2024).

Training-free and transductive: every image of a set of N images of ONE product is
scored against the other N - 1 (docs/specification.md). Per tapped block (plain residual-stream
outputs, not the V-V path) the patch tokens are standardised per image, aggregated over
r x r neighbourhoods (LNAMD, r in ``degrees``) and L2-normalised; each of the taps x
degrees feature sets gives a patch score = the mean of the K smallest distances to the
other images' nearest patches (MSM, :mod:`.mutual`); the patch map is their mean. The
image score is the maximum of the upsampled map, re-scored over the set with the CLIP
image embeddings (RsCIN, :mod:`.rscin`).

``detect`` scores one batch as one set. Large sets go through :func:`MuscDetector.set_tokens`
batch by batch into a :class:`~.store.TokenStore` (spilled to disk beyond
``memory_mb``) and :meth:`MuscDetector.patch_maps` (``zsad.engine.set_scoring``).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...backbone import ClipBackbone
from ...errors import InvalidInputError, SmallSetWarning
from .. import register_method
from ..base import AnomalyDetector, DetectorOutput, MethodConfig
from .lnamd import aggregate, standardise
from .mutual import block_pairs, interval_size, mutual_scores, no_progress
from .rscin import rescore
from .store import TokenStore

DEFAULT_WINDOWS = {"visa": (1, 8, 9), None: (1, 2, 3)}  # RsCIN's k per data kind, as the reference code
SMALL_SET = 5  # below this K = 1 is forced (the reference gives NaN): warn
MIB = 2**20


@dataclass
class MuscConfig(MethodConfig):
    """taps: 1-based blocks (empty = D/4, D/2, 3D/4, D: 6, 12, 18, 24 of ViT-L); degrees:
    LNAMD neighbourhood sides r; interval: X, the fraction of the other images averaged
    (K = max(1, floor(X (N - 1)))); interval_lower: X_min, order statistics below
    floor(X_min (N - 1)) + 1 are skipped; rescoring: RsCIN on/off; windows: RsCIN's k
    (empty = the reference's choice per data set: {1, 8, 9} for VisA, {1, 2, 3} for
    anything else, `zsad predict` included); block_mb: the most MiB
    of one similarity block; table_mb: the most MiB of the (N, N, L) pair-minima table
    (beyond it, query blocks are reduced one by one); memory_mb: the most MiB of tokens
    held in memory before they spill to a temporary file."""

    taps: tuple[int, ...] = ()
    degrees: tuple[int, ...] = (1, 3, 5)
    interval: float = 0.3
    interval_lower: float = 0.0
    rescoring: bool = True
    windows: tuple[int, ...] = ()
    block_mb: float = 256.0
    table_mb: float = 1024.0
    memory_mb: float = 4096.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.interval_lower < self.interval <= 1.0:
            raise InvalidInputError(f"MuSc needs 0 <= interval_lower < interval <= 1, got {self.interval_lower}, {self.interval}")
        if not self.degrees or any(r < 1 or r % 2 == 0 for r in self.degrees):
            raise InvalidInputError(f"MuSc degrees must be odd and >= 1, got {self.degrees}")
        if self.windows and min(self.windows) < 1:
            raise InvalidInputError(f"RsCIN windows must be >= 1, got {self.windows}")


@register_method
class MuscDetector(AnomalyDetector):
    name = "musc"
    config_class = MuscConfig
    scores_sets = True

    def __init__(self, backbone: ClipBackbone, config: MuscConfig):
        super().__init__(backbone, config)
        self.taps = backbone.resolve_taps(config.taps)

    def feature_taps(self) -> tuple[int, ...]:
        return self.taps

    @torch.no_grad()
    def set_tokens(self, images: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """images (B, 3, S, S) -> (tap -> (B, L, C) standardised patch tokens of the plain
        block outputs, (B, d_t) L2-normalised CLIP image embeddings). Per image: B is only
        the extraction batch."""
        features = self.backbone.forward_visual(images, taps=self.taps)
        tokens = {tap: standardise(features.hidden[tap][:, 1:]) for tap in self.taps}
        return tokens, F.normalize(features.image_embedding.float(), dim=-1)

    def new_store(self, spill_dir=None) -> TokenStore:
        return TokenStore(self.taps, int(self.config.memory_mb * MIB), spill_dir)

    def progress_steps(self, n_images: int) -> int:
        """How many steps :meth:`patch_maps` reports for a set of N images."""
        patches = self.backbone.grid[0] * self.backbone.grid[1]
        per_set = block_pairs(n_images, patches, int(self.config.block_mb * MIB), int(self.config.table_mb * MIB))
        return per_set * len(self.taps) * len(self.config.degrees)

    def patch_maps(self, store: TokenStore, device: torch.device | str = "cpu",
                   progress: Callable[[int], None] = no_progress) -> torch.Tensor:
        """The N images of ``store`` as one set -> (N, h, w) raw patch maps in [0, 2]: the
        mean over taps and degrees of the MSM patch scores. Refuses N = 1; warns for N < 5."""
        n_images = len(store)
        check_set_size(n_images)
        grid = self.backbone.grid
        patches = grid[0] * grid[1]
        total = torch.zeros(n_images, patches, dtype=torch.float64)
        passes = 0
        for tap in self.taps:
            tokens = store.tokens(tap)
            for degree in self.config.degrees:
                def read(start: int, stop: int, tokens=tokens, degree=degree) -> torch.Tensor:
                    return aggregate(torch.from_numpy(np.array(tokens[start:stop])), grid, degree)  # a copy: memory maps are read-only

                offset = passes * block_pairs(n_images, patches, int(self.config.block_mb * MIB), int(self.config.table_mb * MIB))
                total += mutual_scores(
                    read, n_images, patches, self.config.interval, self.config.interval_lower,
                    int(self.config.block_mb * MIB), int(self.config.table_mb * MIB), device,
                    lambda done, offset=offset: progress(offset + done),
                ).double()
                passes += 1
        return (total / passes).float().reshape(n_images, *grid)

    def image_scores(self, patch_maps: torch.Tensor, size: int, chunk: int = 16) -> torch.Tensor:
        """(N, h, w) raw patch maps -> (N,) raw image scores: the maximum of each map
        upsampled to size x size (bilinear, align_corners=True, as the reference)."""
        return torch.cat([upsample_maps(patch_maps[start : start + chunk], size).flatten(1).amax(dim=1)
                          for start in range(0, patch_maps.shape[0], chunk)])

    def final_scores(self, raw_scores: torch.Tensor, embeddings: torch.Tensor, data_kind: str | None = None) -> torch.Tensor:
        """(N,) raw image scores of one category (all its subsets), (N, d_t) embeddings ->
        (N,) scores in [0, 1]: RsCIN, or min-max over the set when re-scoring is off.
        data_kind: the data set's kind (``visa`` picks the reference's VisA windows)."""
        windows = (self.config.windows or DEFAULT_WINDOWS.get(data_kind, DEFAULT_WINDOWS[None])) if self.config.rescoring else (1,)
        return rescore(raw_scores, embeddings, windows)

    def detect(self, images: torch.Tensor, prompts: None, masks=None, labels=None) -> DetectorOutput:
        """images (B, 3, S, S) as ONE set of B >= 2 images of one product -> maps (B, S, S)
        (raw / 2) and RsCIN scores (B,), both in [0, 1] and relative to this set."""
        check_set_size(images.shape[0])
        tokens, embeddings = self.set_tokens(images)
        with self.new_store() as store:
            store.append(tokens)
            patch_maps = self.patch_maps(store, images.device)
        size = images.shape[-1]
        raw = self.image_scores(patch_maps, size)
        anomaly_map = (upsample_maps(patch_maps, size) / 2).clamp(0, 1).to(images.device)
        return DetectorOutput(anomaly_map=anomaly_map, pred_score=self.final_scores(raw, embeddings.cpu()).to(images.device))


def upsample_maps(patch_maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) -> (N, size, size), bilinear with align_corners=True (the reference's)."""
    return F.interpolate(patch_maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=True)[:, 0]


def check_set_size(n_images: int) -> None:
    """Refuse a set of one image (nothing to compare it with); warn below SMALL_SET."""
    if n_images < 2:
        raise InvalidInputError(
            "MuSc scores each image against the other images of its set, and this set has "
            f"{n_images} image(s): give at least 2 images of one product (5 or more recommended), "
            "or add normal images with --reference DIR"
        )
    if n_images < SMALL_SET:
        warnings.warn(
            f"MuSc set of {n_images} images: each patch is compared with the nearest of only {n_images - 1} other "
            f"images (K = {interval_size(n_images, 0.3)}); use {SMALL_SET} or more images of one product for reliable scores",
            SmallSetWarning, stacklevel=3,
        )


def set_indices(n_images: int, set_size: int | None, seed: int = 42) -> list[list[int]]:
    """Label-free subsets: positions 0..N-1 shuffled with a fixed seed and cut into
    ceil(N / set_size) subsets of near-equal size (None = one set). Callers pass the
    items sorted by path, so the split depends only on the paths."""
    if set_size is None or set_size >= n_images:
        return [list(range(n_images))]
    if set_size < 2:
        raise InvalidInputError(f"--set-size must be at least 2, got {set_size}")
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed)).tolist()
    count = -(-n_images // set_size)
    return [sorted(order[part::count]) for part in range(count)]


__all__ = ["MuscConfig", "MuscDetector", "check_set_size", "set_indices", "upsample_maps"]
