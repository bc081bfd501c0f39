"""MoECLIP: importing the package registers the method."""
from .model import MoEClipDetector

__all__ = ["MoEClipDetector"]
