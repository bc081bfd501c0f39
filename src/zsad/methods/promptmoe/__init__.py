"""PromptMoE: importing the package registers the method."""
from .model import PromptMoEDetector

__all__ = ["PromptMoEDetector"]
