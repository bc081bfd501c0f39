"""Thresholds from normal images alone, with a distribution-free guarantee (split conformal).

A production line has a folder of good parts and nothing else. From the scores of
``n`` normal images, calibrated for a false-positive rate ``alpha``:

**Image threshold.** ``k = ceil((n + 1)(1 - alpha))``; the threshold ``t`` is set just
above the ``k``-th smallest calibration score, so the rule ``score >= t`` flags exactly
the scores *strictly above* it. If the calibration images and a new normal image are
exchangeable (drawn the same way, in any order: the same line, camera and model), then
over the draw of the calibration set and the new image

    P(new normal image flagged) = P(S_new > S_(k)) <= (n + 1 - k) / (n + 1) <= alpha,

ties included; with continuous scores it is also >= alpha - 1 / (n + 1). This is a
*marginal* guarantee (averaged over calibration sets); the rate given one calibration
set is Beta(n + 1 - k, k) distributed around it. It needs ``k <= n``, i.e.
``n >= 1 / alpha - 1`` normal images (:func:`min_normal_images`).

**Pixel threshold (for masks and overlay contours).** Pixels of one image are not
exchangeable with each other (neighbours are correlated, borders differ), but whole
images are; so the guarantee is stated per image, on the fraction of its pixels
flagged, by conformal risk control (Angelopoulos et al., 2022, "Conformal Risk
Control") with the loss ``L_i(t)`` = fraction of image ``i``'s map pixels ``>= t``
(non-increasing in ``t``, bounded by 1). The threshold is the smallest ``t`` with

    (n * mean_i L_i(t) + 1) / (n + 1) <= alpha,

which gives ``E[fraction of a new normal image's pixels flagged] <= alpha``: the
expected pixel false-positive rate, over the calibration draw and the new image. The
pixels are those of the model-resolution maps (``S x S``), all maps of one size; the
condition is feasible exactly when ``n >= 1 / alpha - 1``, the image count again.

**p-value.** For a score ``s``: ``(1 + #{calibration scores >= s}) / (n + 1)``, the
conformal form of "the fraction of normal calibration scores at or above ``s``"
(the +1 counts the image itself, which makes it valid: for a new normal image
``P(p <= a) <= a`` for every ``a``, and ``p`` is uniform on ``{1/(n+1), ..., 1}`` when
scores have no ties).

A calibration holds for one scoring function only: the file records the model's
identity (:func:`check_fits`) and one entry per category (the prompt words are part of
what is scored).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoints import config_differences
from .errors import InvalidInputError, MissingInputError
from .fileio import atomic_write_json

__all__ = [
    "Calibration", "CalibrationMismatchError", "ClassCalibration", "PixelTail", "TooFewNormalImagesError",
    "calibrate_class", "calibrated_rates", "conformal_rank", "image_threshold", "load_calibration", "min_normal_images",
    "p_values", "pixel_threshold", "rate_at", "require_normal_images",
]

FORMAT = "zsad-calibration/1"


class TooFewNormalImagesError(InvalidInputError):
    """Fewer normal images than the requested false-positive rate needs."""


class CalibrationMismatchError(InvalidInputError):
    """A calibration file made for another model (or another category)."""


def _exact(alpha: float) -> Fraction:
    """``alpha`` as the decimal the user wrote (0.01 is 1/100, not the nearest binary float),
    so that ranks are exact integers where the arithmetic says so."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"the false-positive rate must lie strictly between 0 and 1, got {alpha}")
    return Fraction(repr(float(alpha)))


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)): the rank (1-based, ascending) of the calibration score
    that the image threshold sits on."""
    return math.ceil((n + 1) * (1 - _exact(alpha)))


def min_normal_images(alpha: float) -> int:
    """The fewest normal images for which the rate ``alpha`` can be guaranteed:
    the smallest n with conformal_rank(n, alpha) <= n, i.e. ceil(1 / alpha - 1)."""
    return max(1, math.ceil(1 / _exact(alpha) - 1))


def require_normal_images(n: int, alpha: float, what: str = "") -> None:
    """Refuse, with the number needed, when ``n`` normal images (of ``what``) are too few for ``alpha``."""
    needed = min_normal_images(alpha)
    if n < needed:
        raise TooFewNormalImagesError(
            f"a false-positive rate of {alpha} needs at least {needed} normal images (split conformal: "
            f"ceil((n+1)(1-rate)) <= n); {what or 'got'} {n}. Add {needed - n} more normal images, or ask for a "
            f"rate of at least {1 / (n + 1):.4g} (= 1/(n+1))."
        )


def _just_above(value: float) -> float:
    """The smallest float64 above ``value``: ``score >= it`` means ``score > value``."""
    return float(np.nextafter(np.float64(value), np.inf))


def image_threshold(scores: np.ndarray, alpha: float) -> float:
    """scores: (n,) normal calibration scores -> the image threshold (see the module
    docstring): just above the k-th smallest score, k = conformal_rank(n, alpha)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    require_normal_images(scores.size, alpha)
    k = conformal_rank(scores.size, alpha)
    return _just_above(np.partition(scores, k - 1)[k - 1])


def p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{calibration scores >= s}) / (n + 1) for every s in ``scores`` (any shape)."""
    reference = np.sort(np.asarray(calibration_scores, dtype=np.float64).reshape(-1))
    values = np.asarray(scores, dtype=np.float64)
    at_or_above = reference.size - np.searchsorted(reference, values, side="left")
    return (1.0 + at_or_above) / (reference.size + 1.0)


def rate_at(scores: np.ndarray, threshold: float) -> float | None:
    """Fraction of ``scores`` flagged by ``score >= threshold`` (None for no scores): a
    false-positive rate on normal scores, a recall on anomalous ones."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return float((scores >= threshold).mean()) if scores.size else None


class PixelTail:
    """Streams normal maps and keeps only what the pixel threshold needs: the largest
    ``capacity`` pixel values seen (plus the counts), so memory is O(alpha * pixels).

    capacity: floor(P * (alpha (n_max + 1) - 1)) + 1 for the largest number of images
    ``n_max`` that will be added (P pixels per map); fewer images need fewer values.
    """

    def __init__(self, n_max: int, alpha: float, pixels_per_map: int):
        self.alpha = alpha
        self.pixels_per_map = pixels_per_map
        self.capacity = max(0, _flag_budget(n_max, alpha, pixels_per_map)) + 1
        self.n_maps = 0
        self._top = np.empty(0, dtype=np.float64)

    def add(self, maps: np.ndarray) -> None:
        """maps: (B, S, S) normal anomaly maps at the model's resolution."""
        maps = np.asarray(maps, dtype=np.float64)
        if maps[0].size != self.pixels_per_map:
            raise InvalidInputError(f"maps of {maps[0].size} pixels, expected {self.pixels_per_map}")
        pooled = np.concatenate([self._top, maps.reshape(-1)])
        if pooled.size > self.capacity:
            pooled = np.partition(pooled, pooled.size - self.capacity)[pooled.size - self.capacity :]
        self._top = pooled
        self.n_maps += len(maps)

    def threshold(self) -> float:
        """The pixel threshold over the maps added (see the module docstring)."""
        require_normal_images(self.n_maps, self.alpha)
        budget = _flag_budget(self.n_maps, self.alpha, self.pixels_per_map)  # most pixels >= t allowed
        top = np.sort(self._top)
        if budget + 1 > top.size:  # cannot happen with a capacity made for n_max >= n_maps
            raise RuntimeError("PixelTail kept too few values for its images")
        # flag at most `budget` pixels: everything strictly above the (budget + 1)-th largest value
        return _just_above(top[top.size - budget - 1])


def _flag_budget(n: int, alpha: float, pixels_per_map: int) -> int:
    """floor(P * (alpha (n + 1) - 1)): how many of the n * P calibration pixels may be >= t
    under the risk-control condition (n mean L(t) + 1) / (n + 1) <= alpha."""
    return math.floor(pixels_per_map * (_exact(alpha) * (n + 1) - 1))


def pixel_threshold(maps: np.ndarray, alpha: float) -> float:
    """maps: (n, S, S) normal maps -> the pixel threshold (all in memory; see PixelTail)."""
    tail = PixelTail(len(maps), alpha, int(np.prod(np.shape(maps)[1:])))
    tail.add(maps)
    return tail.threshold()


@dataclass
class ClassCalibration:
    """One category's calibration: its prompt words, the rate asked for, the thresholds,
    and the sorted normal scores (for p-values)."""

    class_words: str
    false_positive_rate: float
    image_threshold: float
    pixel_threshold: float
    scores: list[float]
    expected_false_positive_rate: float = 0.0  # (n + 1 - k) / (n + 1), the bound actually reached

    @property
    def n_images(self) -> int:
        return len(self.scores)

    def p_values(self, scores: Iterable[float]) -> np.ndarray:
        return p_values(np.asarray(self.scores), np.asarray(list(scores), dtype=np.float64))


def calibrate_class(class_words: str, scores: np.ndarray, tail: PixelTail, alpha: float) -> ClassCalibration:
    """Thresholds of one category from its normal scores (n,) and the pixel tail of its maps."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    threshold = image_threshold(scores, alpha)
    n = scores.size
    return ClassCalibration(
        class_words=class_words, false_positive_rate=alpha, image_threshold=threshold,
        pixel_threshold=tail.threshold(), scores=scores.tolist(),
        expected_false_positive_rate=(n + 1 - conformal_rank(n, alpha)) / (n + 1),
    )


@dataclass
class Calibration:
    """A calibration file: the model's identity and one entry per category key."""

    identity: dict[str, Any]
    classes: dict[str, ClassCalibration] = field(default_factory=dict)
    source: str = ""  # where the normal images came from (for the record)
    split: str | None = None  # the data set's split they were (train / validation); None for folders

    def save(self, path: Path, overwrite: bool = False) -> Path:
        body = {"format": FORMAT, "identity": self.identity, "source": self.source, "split": self.split,
                "classes": {key: {**asdict(entry), "n_images": entry.n_images} for key, entry in self.classes.items()}}
        return atomic_write_json(Path(path), body, overwrite=overwrite)

    def check_fits(self, identity: Mapping[str, Any], path: str | Path) -> None:
        """Refuse, naming every differing field, when ``identity`` (the model about to use
        the file) is not the one the file was made with."""
        differences = config_differences(dict(identity), self.identity, stored_name="the calibration file")
        if differences:
            raise CalibrationMismatchError(
                f"{path} was calibrated for another model: {'; '.join(differences)}. Run `zsad calibrate` with this "
                "model's options, or use the options the file was made with."
            )

    def for_words(self, class_words: str, path: str | Path) -> ClassCalibration:
        """The entry for images scored with the prompt words ``class_words``."""
        for entry in self.classes.values():
            if entry.class_words == class_words:
                return entry
        have = ", ".join(repr(entry.class_words) for entry in self.classes.values())
        raise CalibrationMismatchError(
            f"{path} has no calibration for the prompt words {class_words!r} (it has {have}); pass the same "
            "--class-name as `zsad calibrate`, or calibrate for these words."
        )

    def for_classes(self, keys: Iterable[str], path: str | Path) -> dict[str, ClassCalibration]:
        """The entries of the category keys ``keys`` (e.g. a test set's classes), all required."""
        keys = list(keys)
        missing = [key for key in keys if key not in self.classes]
        if missing:
            raise CalibrationMismatchError(
                f"{path} has no calibration for the classes {', '.join(missing)} (it has {', '.join(self.classes)}); "
                "calibrate them with `zsad calibrate --data KIND:PATH`."
            )
        return {key: self.classes[key] for key in keys}


def load_calibration(path: str | Path) -> Calibration:
    """Read a file written by :meth:`Calibration.save` (one clear error otherwise)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"calibration file not found: {path} (make one with `zsad calibrate`)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if body.get("format") != FORMAT:
            raise ValueError(f"format {body.get('format')!r}, expected {FORMAT!r}")
        classes = {}
        for key, entry in body["classes"].items():
            entry = {name: value for name, value in entry.items() if name != "n_images"}
            classes[key] = ClassCalibration(**entry)
        return Calibration(
            identity=body["identity"], classes=classes, source=body.get("source", ""), split=body.get("split")
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"{path} is not a zsad calibration file ({error}); make one with `zsad calibrate`") from error


def calibrated_rates(
    scores: np.ndarray,
    labels: np.ndarray,
    entry: ClassCalibration,
    map_chunks: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Label-free evaluation of one category at its calibrated thresholds.

    scores, labels: (N,) image scores and labels (1 anomalous, 0 normal, -1 unknown);
    map_chunks: the category's (maps (n, S, S), masks (n, S, S) bool) in the same image
    order, or None without masks. -> ``fpr`` (normal images flagged), ``recall``
    (anomalous images flagged), ``pixel_fpr`` (pixels of normal images inside the
    contour: the rate the pixel threshold bounds in expectation) and ``pixel_recall``
    (ground-truth anomalous pixels inside it); None where undefined.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    result: dict[str, Any] = {
        "image_threshold": entry.image_threshold, "pixel_threshold": entry.pixel_threshold,
        "fpr": rate_at(scores[labels == 0], entry.image_threshold),
        "recall": rate_at(scores[labels == 1], entry.image_threshold),
        "pixel_fpr": None, "pixel_recall": None,
    }
    if map_chunks is None:
        return result
    flagged_normal = normal = flagged_defect = defect = 0
    start = 0
    for maps, masks in map_chunks:
        normal_image = labels[start : start + len(maps)] == 0
        start += len(maps)
        flagged = maps >= entry.pixel_threshold
        flagged_normal += int(flagged[normal_image].sum())
        normal += int(flagged[normal_image].size)
        flagged_defect += int((flagged & masks).sum())
        defect += int(masks.sum())
    result["pixel_fpr"] = flagged_normal / normal if normal else None
    result["pixel_recall"] = flagged_defect / defect if defect else None
    return result
