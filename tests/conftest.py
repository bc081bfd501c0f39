"""Shared fixtures: the tiny random-weight OpenCLIP model and generated data sets."""
from __future__ import annotations

import warnings

import pytest
import torch

from zsad.backbone import create_backbone
from zsad.errors import RandomWeightsWarning

TINY_IMAGE_SIZE = 64


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def make_tiny_backbone(image_size: int = TINY_IMAGE_SIZE):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return create_backbone(model_name="zsad-tiny", weights="random", image_size=image_size)


@pytest.fixture(scope="session")
def tiny_backbone():
    """A frozen zsad-tiny backbone at 64 px (random weights, 4 blocks, width 64)."""
    torch.manual_seed(1234)
    return make_tiny_backbone()
