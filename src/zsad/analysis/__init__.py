"""Analyses of the MoECLIP experts (patch selection, similarity, utilisation, patch statistics).

>>> from zsad.analysis import expert_similarity, utilisation, patch_statistics
"""
from .experts import (
    ExpertAnalysis,
    ExpertAnalysisAccumulator,
    PatchRouting,
    expert_similarity,
    selection_maps,
    shares,
    strip_cls,
    token_grid,
    utilisation,
)
from .patches import patch_statistics, to_grayscale, to_uint8_rgb

__all__ = [
    "ExpertAnalysis",
    "ExpertAnalysisAccumulator",
    "PatchRouting",
    "expert_similarity",
    "patch_statistics",
    "selection_maps",
    "shares",
    "strip_cls",
    "to_grayscale",
    "to_uint8_rgb",
    "token_grid",
    "utilisation",
]
