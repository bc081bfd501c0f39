"""The roots of zsad's own errors and warnings.

A ``ZsadError`` is a problem the user can fix (a bad path, a wrong option, a checkpoint
made for another model): the command line prints its message as one line. Anything else
that escapes is a bug in zsad and keeps its traceback. The concrete classes also derive
from the built-in exception that describes them (``ValueError``, ``FileNotFoundError``),
so library callers that catch those keep working.

Warnings are filtered by class, never by their text.
"""
from __future__ import annotations


class ZsadError(Exception):
    """A user-facing error: its message says what is wrong and what to do."""


class InvalidInputError(ZsadError, ValueError):
    """An argument, option, data spec or file content that zsad cannot use."""


class MissingInputError(ZsadError, FileNotFoundError):
    """A file or folder that the user named does not exist."""


class ZsadWarning(UserWarning):
    """Root of zsad's warnings."""


class RandomWeightsWarning(ZsadWarning):
    """The CLIP backbone has random weights: every output is a pipeline check."""


class UntrainedAdaptersWarning(ZsadWarning):
    """A trainable method runs without a checkpoint: its adapters are untrained."""


class SmallSetWarning(ZsadWarning):
    """A transductive method scores a set of few images: its scores are less reliable."""
