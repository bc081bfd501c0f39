"""Counts in messages: "1 image", "2 images"."""
from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is one (``plural``
    for nouns that do not just take an "s": "1 entry", "3 entries")."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
