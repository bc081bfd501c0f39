"""zsad: zero-shot anomaly detection and segmentation with CLIP.

>>> import zsad
>>> detector = zsad.load("zeroshot")                       # training-free, OpenAI weights
>>> detector = zsad.load(checkpoint="runs/moeclip-visa")   # a model from `zsad train`
>>> [prediction] = detector.predict("part.png", class_name="metal nut")
>>> prediction.score, prediction.anomaly_map.shape
"""
from .api import Predictor, Prediction, load

__version__ = "0.1.0"
__all__ = ["Predictor", "Prediction", "load", "__version__"]
