"""The contract every registered method keeps (run for each name in available_methods(),
so a new method gets these checks by registering itself): shapes and ranges, finite
losses also with unknown masks and labels, a frozen backbone, gradients for every
trainable parameter, an exact checkpoint round trip, on the CPU and on CUDA when present.
``toy_method`` (imported here, which registers it) is a method written in one module."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import toy_method  # noqa: F401  (registers "toy")

from zsad.checkpoints import save_checkpoint
from zsad.errors import RandomWeightsWarning
from zsad.methods import available_methods, method_class
from zsad.methods.build import build_detector, full_config

SIZE = 64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
METHODS = available_methods()


def build(name: str, checkpoint=None):
    torch.manual_seed(0)  # the random backbone weights, equal for every build
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        if checkpoint is not None:
            return build_detector(checkpoint=checkpoint, weights="random")
        return build_detector(name, backbone="zsad-tiny", weights="random", image_size=SIZE, for_training=True)


def batch(device: str):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, SIZE, SIZE, generator=generator)
    masks = (torch.rand(3, 1, SIZE, SIZE, generator=generator) > 0.8).float()
    masks[1] = -1  # no pixel label
    labels = torch.tensor([1, 0, -1])  # the last label unknown
    return images.to(device), ["object", "screw", "object"], masks.to(device), labels.to(device)


def test_toy_method_is_registered_by_its_import():
    assert "toy" in METHODS and method_class("toy") is toy_method.ToyDetector


@pytest.mark.parametrize("name", METHODS)
def test_registry_key_is_the_class_name(name):
    assert method_class(name).name == name


def test_the_light_name_table_matches_the_registry():
    """zsad.method_names (read by the command line without importing torch) lists exactly
    the bundled methods, each with the registry's trainable flag."""
    from zsad.method_names import BUILTIN_METHODS, SET_METHODS

    bundled = {
        name: method_class(name).trainable for name in available_methods() if method_class(name).__module__.startswith("zsad.methods.")
    }
    assert BUILTIN_METHODS == bundled
    assert set(SET_METHODS) == {name for name in bundled if getattr(method_class(name), "scores_sets", False)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", METHODS)
def test_outputs_have_the_contract_shapes_and_range(name, device):
    detector = build(name).to(device).eval()
    images, words, _, _ = batch(device)
    with torch.no_grad():
        output = detector(images, words)
    assert output.anomaly_map.shape == (3, SIZE, SIZE) and output.pred_score.shape == (3,)
    for values in (output.anomaly_map, output.pred_score):
        assert torch.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    assert output.losses == {}
    for layer in output.routing.values():  # routed methods: what the expert analyses read
        tokens = layer.grid[0] * layer.grid[1]
        assert layer.probabilities.shape[:2] == layer.topk_index.shape[:2] == layer.topk_weight.shape[:2] == (3, tokens)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [name for name in METHODS if method_class(name).trainable])
def test_training_losses_reach_every_trainable_parameter_and_never_the_backbone(name, device):
    detector = build(name).to(device).train()
    output = detector(*batch(device))
    assert output.losses, "a trainable method returns losses in training mode"
    for key, loss in output.losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), key
    torch.stack(list(output.losses.values())).sum().backward()
    assert all(p.grad is None for p in detector.backbone.parameters())
    missing = [key for key, p in detector.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"trainable parameters without a gradient: {missing}"
    assert not any(p.requires_grad for p in detector.backbone.parameters())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_round_trip_gives_equal_outputs(name, device, tmp_path):
    detector = build(name)
    with torch.no_grad():  # move away from the initialisation, so the reload must carry the state
        for parameter in detector.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
    reloaded = build(name, checkpoint=path)
    images, words, _, _ = batch(device)
    with torch.no_grad():
        first = detector.to(device).eval()(images, words)
        second = reloaded.to(device).eval()(images, words)
    assert torch.equal(first.anomaly_map, second.anomaly_map)
    assert torch.equal(first.pred_score, second.pred_score)


def test_a_method_in_one_module_trains_and_predicts_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from zsad.cli import app
    from zsad.data.synth import generate_mvtec_like

    data = tmp_path / "mvtec"
    generate_mvtec_like(data, categories=["disc"], n_train=1, n_good=2, n_defect_per_kind=1, size=32)
    tiny = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32", "--device", "cpu", "--quiet"]
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--method", "toy", "--data", f"mvtec:{data}", "--out", str(tmp_path / "run"),
                                  "--epochs", "1", "--max-steps-per-epoch", "2", *tiny])
    assert trained.exit_code == 0, trained.output
    image = next((data / "disc" / "test").rglob("*.png"))
    predicted = runner.invoke(app, ["predict", str(image), "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "p"),
                                    "--device", "cpu", "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    scores = json.loads((tmp_path / "p" / "scores.json").read_text())
    assert scores["meta"]["method"] == "toy"
