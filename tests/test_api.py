"""Python API and checkpoints: zsad.load(...).predict(...), self-contained checkpoint
files, clear errors for a checkpoint of another config."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import zsad
from zsad.api import Predictor, build_detector, full_config
from zsad.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from zsad.engine.run_folder import epoch_checkpoint_path, resolve_checkpoint
from zsad.errors import RandomWeightsWarning, UntrainedAdaptersWarning
from zsad.text import ClassNames


@pytest.fixture(scope="module")
def zeroshot():
    return zsad.load("zeroshot", backbone="zsad-tiny", weights="random", image_size=64, device="cpu")


def test_predict_accepts_paths_pil_images_and_tensors(zeroshot, tmp_path):
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    path = tmp_path / "part.png"
    Image.fromarray(rgb).save(path)
    from_path, from_pil, from_tensor = zeroshot.predict(
        [path, Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1).float() / 255]
    )
    assert from_path.source == str(path) and from_pil.source is None
    for prediction in (from_path, from_pil, from_tensor):
        assert prediction.anomaly_map.shape == (40, 50)  # the image's own size
        assert 0.0 <= prediction.score <= 1.0
    assert abs(from_path.score - from_pil.score) < 1e-6
    assert abs(from_tensor.score - from_pil.score) < 1e-2  # tensor path rounds to uint8 too
    batch = torch.rand(3, 3, 32, 32)
    assert len(zeroshot.predict(list(batch))) == 3


def test_predict_rejects_normalised_tensors(zeroshot):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zeroshot.predict(torch.randn(3, 32, 32) * 3)


def _moeclip(**config):
    with pytest.warns(UntrainedAdaptersWarning, match="untrained"):
        detector = build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64, method_config=config)
    with torch.no_grad():
        for layer in detector.moe_layers:
            layer.experts.lora_b.normal_(0, 0.3)
    return detector.eval()


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    detector = _moeclip(num_experts=4, rank=4)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
    tensors, config = read_checkpoint(path)
    assert config["method"] == "moeclip" and config["method_config"]["rank"] == 4
    assert config["backbone"] == {"model_name": "zsad-tiny", "weights": "random:0", "image_size": 64, "quick_gelu": None}
    torch.manual_seed(99)  # another global RNG state must not change the rebuilt random backbone
    rebuilt = build_detector(checkpoint=path).eval()  # the file alone rebuilds the model
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for key, value in detector.state_dict().items():
            assert torch.equal(rebuilt.state_dict()[key], value), key
        assert torch.equal(rebuilt(images, ["object"] * 2).anomaly_map, detector(images, ["object"] * 2).anomaly_map)


def test_a_checkpoint_storing_plain_random_rebuilds_the_seed_0_backbone(tmp_path):
    detector = _moeclip()
    config = full_config(detector)
    config["backbone"]["weights"] = "random"  # what checkpoints written before seeds store
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, detector.trainable_state_dict(), config)
    rebuilt = build_detector(checkpoint=path)
    assert rebuilt.backbone.weights_description == "random:0"
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(rebuilt.backbone.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match=r"backbone.weights: requested 'random:3', the checkpoint has 'random'"):
        build_detector(checkpoint=path, weights="random:3")


def test_a_run_directory_means_its_final_or_latest_checkpoint(tmp_path):
    detector = _moeclip()
    save_checkpoint(epoch_checkpoint_path(tmp_path, 1), detector.trainable_state_dict(), full_config(detector))
    save_checkpoint(epoch_checkpoint_path(tmp_path, 2), detector.trainable_state_dict(), full_config(detector))
    assert resolve_checkpoint(tmp_path).name == "epoch_002.safetensors"
    save_checkpoint(tmp_path / "model.safetensors", detector.trainable_state_dict(), full_config(detector))
    assert resolve_checkpoint(tmp_path).name == "model.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        resolve_checkpoint(tmp_path / "empty")


def test_checkpoint_of_another_config_names_the_difference(tmp_path):
    detector = _moeclip(rank=4)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, detector.trainable_state_dict(), full_config(detector))
    with pytest.raises(CheckpointError, match=r"method_config.rank: requested 8, the checkpoint has 4"):
        build_detector(checkpoint=path, method_config={"rank": 8})
    with pytest.raises(CheckpointError, match=r"backbone.image_size: requested 96, the checkpoint has 64"):
        build_detector(checkpoint=path, image_size=96)
    with pytest.raises(CheckpointError, match=r"method: requested 'zeroshot'"):
        build_detector(method="zeroshot", checkpoint=path)


def test_tensors_that_do_not_fit_are_refused(tmp_path):
    detector = _moeclip(rank=4)
    state = detector.trainable_state_dict()
    state["moe_layers.0.experts.lora_b"] = torch.zeros(4, 64, 2)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, state, full_config(detector))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        build_detector(checkpoint=path)


def test_foreign_or_missing_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a zsad checkpoint"):
        read_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nothing.safetensors")


def test_building_for_training_does_not_warn_about_untrained_adapters():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", RandomWeightsWarning)
        build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64, for_training=True)


def _trainable_state(seed: int) -> dict[str, torch.Tensor]:
    detector = build_detector("moeclip", backbone="zsad-tiny", weights="random", image_size=64, for_training=True, seed=seed)
    return {key: value.clone() for key, value in detector.trainable_state_dict().items()}


def test_the_seed_fixes_the_method_initialisation_whatever_ran_before():
    torch.manual_seed(11)
    first = _trainable_state(seed=4)
    torch.manual_seed(12)
    torch.randn(500)
    second = _trainable_state(seed=4)
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(second[key], value), key
    other = _trainable_state(seed=5)
    routers = [key for key in first if "router" in key]
    assert routers and all(not torch.equal(other[key], first[key]) for key in routers)


@pytest.mark.parametrize("method", ["zeroshot", "moeclip"])
def test_an_image_size_that_is_not_a_multiple_of_the_patch_works_end_to_end(method):
    detector = build_detector(method, backbone="zsad-tiny", weights="random", image_size=100, for_training=True).eval()
    assert detector.backbone.grid == (12, 12)  # zsad-tiny's patch is 8: 100 // 8, remainder 4
    with torch.no_grad():
        output = detector(torch.randn(2, 3, 100, 100), ["object"] * 2)
    assert output.anomaly_map.shape == (2, 100, 100) and output.pred_score.shape == (2,)
    assert torch.isfinite(output.anomaly_map).all()
    predictions = Predictor(detector, torch.device("cpu"), ClassNames.load()).predict(torch.rand(3, 70, 90))
    assert predictions[0].anomaly_map.shape == (70, 90)
