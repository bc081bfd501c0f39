"""Base class of the settings dataclasses (method configs, training config): a JSON /
YAML round trip with unknown keys refused."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from .errors import InvalidInputError

# Numeric precisions a model may run in (fp32, or bf16 autocast on GPUs).
PRECISIONS = ("fp32", "bf16")
# How image scores may be rescaled before the image metrics: not at all, or over each
# class's whole test set (transductive, for comparison with the MoECLIP authors' code).
SCORE_NORMALISATIONS = ("none", "per-class-minmax")
# What the image metrics score: each image, or each physical sample by the max over its
# views (multi-view sets such as Real-IAD; an image without a sample is its own sample).
SAMPLE_SCORES = ("image", "max-over-views")
# Which normal images of a data set `zsad calibrate --data` uses: "auto" takes the
# held-out normal images (validation/good) where the layout has them, else train/good.
CALIBRATION_SPLITS = ("auto", "train", "validation")
# torch.compile settings of the inference and training calls (engine/compilation.py):
# eager, or inductor's default, max-autotune or reduce-overhead (CUDA graphs) mode.
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")
# What kind of images a data set holds. A method may score them differently (MoECLIP's
# released code smooths and scores medical images otherwise); a data-set kind declares its
# domain, and images of unknown origin are industrial unless the user says otherwise.
INDUSTRIAL, MEDICAL = "industrial", "medical"
DOMAINS = (INDUSTRIAL, MEDICAL)
DEFAULT_DOMAIN = INDUSTRIAL
# The CLIP blocks' MLP activation, as the command line names it (backbone.ACTIVATIONS).
ACTIVATION_NAMES = ("quick_gelu", "gelu")

SettingsT = TypeVar("SettingsT", bound="Settings")


@dataclass
class Settings:
    """Subclasses are dataclasses of plain values; tuples travel as JSON lists.

    ``runtime_fields`` name the fields that change how, not what, is computed (e.g.
    activation recomputation): a checkpoint and the model that loads or resumes it may
    differ in them.
    """

    runtime_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls: type[SettingsT], values: dict[str, Any] | None) -> SettingsT:
        """Build from a plain dict (recipe / JSON); unknown keys raise ValueError."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}
