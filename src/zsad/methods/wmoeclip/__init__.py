"""WMoE-CLIP (docs/specification.md (WMoE-CLIP)): CTDS prompts, wavelet cross-modal attention, semantic MoE.
Importing the package registers the method."""
from .model import WMoEClipDetector

__all__ = ["WMoEClipDetector"]
