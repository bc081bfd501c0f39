"""zsad: zero-shot anomaly detection and segmentation with CLIP.

>>> import zsad
>>> detector = zsad.load("zeroshot")                       # training-free, OpenAI weights
>>> detector = zsad.load(checkpoint="runs/moeclip-visa")   # a model from `zsad train`
>>> [prediction] = detector.predict("part.png", class_name="metal nut")
>>> prediction.score, prediction.anomaly_map.shape
"""
__version__ = "0.1.0"
__all__ = ["Predictor", "Prediction", "Scorer", "ScorerSpec", "load", "__version__"]


def __getattr__(name: str):
    """``zsad.load`` and friends import torch on first use only, so that ``import zsad``
    (and the command line's help) stays fast."""
    if name in ("Predictor", "Prediction", "Scorer", "ScorerSpec", "load"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'zsad' has no attribute {name!r}")
