"""``KIND:PATH`` data specs, read without importing torch (the command line checks them
before it loads a model)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError, MissingInputError
from .layouts import LAYOUTS

DATASET_KINDS: tuple[str, ...] = tuple(LAYOUTS)


def parse_data_spec(spec: str) -> tuple[str, Path]:
    """``"kind:PATH"`` -> ``("kind", Path(PATH))``; the kind is case-insensitive.

    Raises InvalidInputError naming the known kinds when the spec is malformed or the kind unknown.
    """
    kind, separator, path = spec.partition(":")
    kind = kind.strip().lower()
    if not separator or not path.strip():
        raise InvalidInputError(f"data spec {spec!r} is not KIND:PATH; kinds: {', '.join(DATASET_KINDS)}")
    if kind not in LAYOUTS:
        raise InvalidInputError(f"unknown data-set kind {kind!r} in {spec!r}; kinds: {', '.join(DATASET_KINDS)}")
    return kind, Path(path.strip()).expanduser()


def check_data_spec(spec: str) -> tuple[str, Path]:
    """:func:`parse_data_spec`, and the paths it names must exist (MissingInputError
    otherwise)."""
    kind, path = parse_data_spec(spec)
    for named in LAYOUTS[kind].named_paths(path):
        if not named.exists():
            raise MissingInputError(f"data spec {spec!r}: {named} not found")
    return kind, path
