"""Analyses of the experts of a routed method (patch selection, similarity, utilisation, patch statistics).

>>> from zsad.analysis import expert_similarity, utilisation, patch_statistics
"""
from .experts import (
    ExpertAnalysis,
    ExpertAnalysisAccumulator,
    expert_similarity,
    selection_maps,
    shares,
    utilisation,
)
from .patches import patch_statistics, to_grayscale, to_uint8_rgb

__all__ = [
    "ExpertAnalysis",
    "ExpertAnalysisAccumulator",
    "expert_similarity",
    "patch_statistics",
    "selection_maps",
    "shares",
    "to_grayscale",
    "to_uint8_rgb",
    "utilisation",
]
