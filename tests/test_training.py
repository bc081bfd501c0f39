"""The training engine: config, data order and seeds, the loop, outputs, resume, errors,
the torchrun path (gloo, world size 1), and a MoECLIP smoke run."""
from __future__ import annotations

import shutil
import socket
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zsad.backbone import create_backbone
from zsad.checkpoints import CheckpointError, read_checkpoint
from zsad.data import build_dataset, collate
from zsad.data.augment import AugmentDraw, AugmentSampler
from zsad.data.synth import generate_mvtec_like
from zsad.engine.distributed import DistributedContext, context_from_environment, ddp_options, process_device
from zsad.engine.run_folder import (
    DamagedCheckpointError,
    RunDirectoryNotEmptyError,
    check_resume_config,
    epoch_checkpoints,
    resolve_checkpoint,
    train_state_path,
)
from zsad.engine.train_config import TrainingConfig
from zsad.engine.train_data import SeededItems, derive_seed, epoch_order, training_batch
from zsad.engine.train_log import TrainLog, read_train_log
from zsad.engine.training import TrainingError, fit
from zsad.errors import RandomWeightsWarning
from zsad.methods.base import AnomalyDetector, DetectorOutput, MethodConfig
from zsad.text import ClassNames

IMAGE_SIZE = 32
STEPS_PER_EPOCH = 3  # 6 test images (2 good + 4 defects), batch 2


# ---------------------------------------------------------------- a tiny trainable method


@dataclass
class TinyHeadConfig(MethodConfig):
    aux_weight: float = 0.1
    dropout: float = 0.2
    activation_checkpointing: bool = False


class TinyHeadDetector(AnomalyDetector):
    """Linear heads on the projected patch tokens of the last block: a pixel map (BCE)
    and an image score (BCE), plus an "aux" weight penalty. Test hooks (not config):
    records the training flag of every forward call, raises at call ``fail_at_call``,
    returns a NaN loss from call ``nan_at_call`` on."""

    name = "tinyhead"
    config_class = TinyHeadConfig
    trainable = True

    def __init__(self, backbone, config: TinyHeadConfig):
        super().__init__(backbone, config)
        self.pixel_head = nn.Linear(backbone.embed_dim, 1)
        self.image_head = nn.Linear(backbone.embed_dim, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.forward_modes: list[bool] = []
        self.seen_masks: list[torch.Tensor] = []
        self.fail_at_call: int | None = None
        self.nan_at_call: int | None = None

    def forward(self, images, class_names, masks=None, labels=None) -> DetectorOutput:
        self.forward_modes.append(self.training)
        call = len(self.forward_modes)
        if self.fail_at_call is not None and call >= self.fail_at_call:
            raise KeyboardInterrupt("interrupted by the test")
        block = self.backbone.depth
        with torch.no_grad():
            features = self.backbone.forward_visual(images, taps=(block,))
            tokens = self.backbone.project_tokens(features.patch_tokens(block))  # (B, L, d_t)
        height, width = features.grid
        pixel_logits = self.pixel_head(self.dropout(tokens)).reshape(-1, 1, height, width)
        pixel_logits = F.interpolate(pixel_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        image_logits = self.image_head(tokens.mean(dim=1))[:, 0]
        output = DetectorOutput(pixel_logits.sigmoid()[:, 0], image_logits.sigmoid())
        if self.training and masks is not None and labels is not None:
            self.seen_masks.append(masks.detach().clone())
            known = masks.flatten(1)[:, 0] >= 0
            seg = F.binary_cross_entropy_with_logits(pixel_logits[known], masks[known]) if known.any() else pixel_logits.sum() * 0
            cls = F.binary_cross_entropy_with_logits(image_logits[labels >= 0], labels[labels >= 0].float())
            if self.nan_at_call is not None and call >= self.nan_at_call:
                seg = seg * float("nan")
            aux = self.config.aux_weight * self.pixel_head.weight.square().sum()
            output.losses = {"seg": seg, "cls": cls, "aux": aux}
        return output


def make_backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        torch.manual_seed(1234)
        return create_backbone(model_name="zsad-tiny", weights="random", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def backbone():
    return make_backbone()


def make_detector(backbone, init_seed: int = 0) -> TinyHeadDetector:
    torch.manual_seed(init_seed)
    return TinyHeadDetector(backbone, TinyHeadConfig())


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["stripes"], n_train=2, n_good=2, n_defect_per_kind=1, size=IMAGE_SIZE, seed=0)
    return f"mvtec:{root}"


def quick_config(**overrides) -> TrainingConfig:
    values = dict(epochs=2, batch_size=2, lr=1e-2, seed=3, milestones=(4,), gamma=0.5)
    values.update(overrides)
    return TrainingConfig(**values)


def run_fit(detector, spec, out, config=None, **kwargs):
    return fit(detector, [spec], out, config or quick_config(), ClassNames.load(), torch.device("cpu"), show_progress=False, **kwargs)


def own_state(detector) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in detector.trainable_state_dict().items()}


def assert_same_state(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.fixture(scope="module")
def straight_run(backbone, data_spec, tmp_path_factory):
    """2 epochs in one go: the reference for the resume and torchrun tests."""
    out = tmp_path_factory.mktemp("straight")
    detector = make_detector(backbone).eval()  # as loaded for inference: fit must switch it to training mode
    result = run_fit(detector, data_spec, out)
    return {"out": out, "detector": detector, "result": result, "state": own_state(detector), "log": read_train_log(out / "train_log.csv")}


# ---------------------------------------------------------------- config


def test_training_config_defaults_round_trip_and_rejects_unknown_keys():
    config = TrainingConfig()
    assert (config.epochs, config.batch_size, config.lr, config.betas) == (20, 2, 5e-4, (0.5, 0.999))
    assert (config.milestones, config.gamma, config.precision, config.augment_p) == ((16000, 32000), 0.5, "fp32", 0.5)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert TrainingConfig.from_dict({"betas": [0.9, 0.99]}).betas == (0.9, 0.99)
    with pytest.raises(ValueError, match="unknown TrainingConfig fields.*'epoch'"):
        TrainingConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="precision"):
        TrainingConfig(precision="fp16")
    with pytest.raises(ValueError, match="milestones"):
        TrainingConfig(milestones=(10, 5))
    assert TrainingConfig(include_train_split=True).split() == "all"


# ---------------------------------------------------------------- data order and seeds


def test_derived_seeds_depend_on_every_part_not_their_sum():
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(5, 2, 7) == derive_seed(5, 2, 7)
    assert 0 <= derive_seed(2**40, 3) < 2**63


def test_epoch_order_is_reproducible_and_differs_between_epochs():
    assert epoch_order(50, seed=1, epoch=2) == epoch_order(50, seed=1, epoch=2)
    assert epoch_order(50, seed=1, epoch=2) != epoch_order(50, seed=1, epoch=3)
    assert epoch_order(50, seed=1, epoch=2) != epoch_order(50, seed=2, epoch=2)
    assert sorted(epoch_order(50, seed=1, epoch=2)) == list(range(50))


@pytest.mark.parametrize(("length", "world_size"), [(10, 3), (12, 4), (2, 3)])
def test_rank_shards_cover_the_epoch_with_equal_lengths(length, world_size):
    full = epoch_order(length, seed=0, epoch=1)
    shards = [epoch_order(length, seed=0, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1
    interleaved = [shard[i] for i in range(len(shards[0])) for shard in shards]
    assert interleaved[:length] == full  # same permutation on every rank, padded at the end
    assert set(interleaved) == set(range(length))
    with pytest.raises(ValueError):
        epoch_order(length, seed=0, epoch=1, rank=world_size, world_size=world_size)


def test_augmentation_is_a_function_of_seed_epoch_and_index_and_leaves_global_rng_alone(data_spec):
    dataset = SeededItems(build_dataset(data_spec, image_size=IMAGE_SIZE), seed=0, sampler=AugmentSampler(IMAGE_SIZE))

    def choices(epoch: int, index: int) -> torch.Tensor:
        params = dataset[(epoch, index)]["augment"]
        return torch.cat([params.geometry.flatten(), params.jitter])

    before = torch.get_rng_state()
    first = choices(1, 3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # the global state must not matter
    assert torch.equal(choices(1, 3), first)
    assert not all(torch.equal(choices(epoch, 3), first) for epoch in range(2, 6))
    assert not all(torch.equal(choices(1, index), first) for index in range(4, 6))
    assert "augment" not in SeededItems(dataset.dataset, seed=0)[(1, 3)]  # no sampler: no choices


def test_training_items_are_uint8_and_the_device_path_without_augmentation_equals_eval(data_spec):
    from zsad.engine.train_data import build_training_data

    data = build_training_data([data_spec], IMAGE_SIZE, quick_config(augment=False))
    evaluated = build_dataset(data_spec, image_size=IMAGE_SIZE)
    items = [data.dataset[(1, index)] for index in range(3)]
    assert items[0]["image"].dtype == torch.uint8 and items[0]["mask"].dtype == torch.uint8 and "augment" not in items[0]
    batch = training_batch(collate(items), torch.device("cpu"))
    for index in range(3):
        image, mask = evaluated[index]["image"], evaluated[index]["mask"]
        assert torch.equal(batch.images[index], image) and torch.equal(batch.masks[index], mask)


def _items(labels, errors, has_mask=(True, True, False), augment=None) -> list[dict]:
    """Three dataset items (image i filled with 10 i; item 1's mask has one anomalous pixel),
    with ``augment`` (one AugmentDraw per item) when given."""
    items = []
    for i in range(3):
        mask = torch.zeros(1, 4, 4, dtype=torch.uint8)
        if i == 1:
            mask[0, 1, 1] = 1
        items.append({"image": torch.full((3, 4, 4), 10 * i, dtype=torch.uint8), "mask": mask, "has_mask": has_mask[i],
                      "label": labels[i], "class_name": "abc"[i], "path": f"p{i}", "original_size": torch.tensor([4, 4]),
                      "error": errors[i]})
        if augment is not None:
            items[-1]["augment"] = augment[i].encode()
    return items


def test_collate_drops_unreadable_items_once_and_names_them():
    batch = collate(_items([0, -1, -1], ["", "broken", ""]))
    assert len(batch) == 2 and batch.size == 3 and batch.positions == [0, 2]
    assert batch.unreadable == [("p1", "broken")] and batch.class_names == ["a", "c"]
    assert batch.images[:, 0, 0, 0].tolist() == [0, 20] and batch.original_sizes.shape == (2, 2)
    assert batch.augment is None
    empty = collate(_items([0, 0, 0], ["x", "y", "z"]))
    assert len(empty) == 0 and empty.images.shape == (0, 3, 4, 4) and training_batch(empty, torch.device("cpu")) is None
    shifted = AugmentDraw(translate=(1, 0))
    augmented = collate(_items([0, -1, -1], ["", "broken", ""], augment=[AugmentDraw(), shifted, shifted]))
    assert augmented.augment.geometry.shape == (2, 2, 3) and augmented.augment.jitter.shape == (2, 4)
    assert augmented.augment.geometry[0, 0, 2] == 0 and augmented.augment.geometry[1, 0, 2] == -1  # the readable rows


def test_training_batch_marks_missing_pixel_labels():
    cpu = torch.device("cpu")
    items = training_batch(collate(_items([0, -1, -1], ["", "", ""])), cpu)
    assert items.categories == ["a", "b", "c"]
    assert items.labels.tolist() == [0, 1, -1]  # unknown label taken from a real mask only
    assert bool((items.masks[0] == 0).all()) and items.masks[1, 0, 1, 1] == 1 and bool((items.masks[2] == -1).all())
    assert items.masks.dtype == torch.float32 and items.images.dtype == torch.float32
    items = training_batch(collate(_items([0, -1, 0], ["", "", ""])), cpu)  # a normal image of a set without masks
    assert bool((items.masks[2] == 0).all()) and items.labels.tolist() == [0, 1, 0]


def test_training_batch_augments_masks_before_labelling_and_keeps_unknown_masks_whole():
    """The device augments image and mask together; an unknown label comes from the
    augmented mask (the defect pixel shifted out of the frame: normal), and the -1 of an
    image without a pixel label covers the whole frame, also where the shift left a gap."""
    stay, leave = AugmentDraw(translate=(1, 0)), AugmentDraw(translate=(-2, 0))
    items = training_batch(collate(_items([0, -1, 1], ["", "", ""], augment=[stay, stay, stay])), torch.device("cpu"))
    assert items.labels.tolist() == [0, 1, 1]
    assert items.masks[1, 0].nonzero().tolist() == [[1, 2]] and bool((items.masks[2] == -1).all())
    assert bool((items.images[:, :, :, 0] == items.images[0, :, 0, 0].view(1, 3, 1)).all())  # black (0) moved in
    items = training_batch(collate(_items([0, -1, 1], ["", "", ""], augment=[stay, leave, stay])), torch.device("cpu"))
    assert items.labels.tolist() == [0, 0, 1]


# ---------------------------------------------------------------- the loop and its outputs


def test_fit_writes_every_output_and_trains_in_train_mode(straight_run, backbone, data_spec):
    out, detector, result = straight_run["out"], straight_run["detector"], straight_run["result"]
    assert detector.forward_modes and all(detector.forward_modes), "the detector ran in eval mode during training"
    assert result.global_step == 2 * STEPS_PER_EPOCH and result.epochs_completed == 2
    assert [epoch for epoch, _ in epoch_checkpoints(out)] == [1, 2]
    for _, path in epoch_checkpoints(out):
        assert train_state_path(path).is_file()
    tensors, stored = read_checkpoint(out / "model.safetensors")
    assert_same_state(tensors, straight_run["state"])
    assert stored["method"] == "tinyhead" and stored["training"]["epochs"] == 2
    assert stored["data"] == [data_spec] and result.image_counts == {data_spec: 6}
    assert stored["class_names"] == {"stripes": "stripes"}
    assert (out / "config.json").is_file() and (out / "loss_curves.png").stat().st_size > 0
    initial = make_detector(backbone).trainable_state_dict()
    assert not torch.equal(initial["pixel_head.weight"], tensors["pixel_head.weight"])


def test_train_log_has_one_row_per_step_with_lr_schedule_and_components(straight_run):
    columns, rows = straight_run["log"]
    assert columns == ["epoch", "step", "lr", "total", "seg", "cls", "aux"]
    assert [row["step"] for row in rows] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [row["epoch"] for row in rows] == [1.0] * 3 + [2.0] * 3
    assert [row["lr"] for row in rows] == [1e-2] * 4 + [5e-3] * 2  # MultiStepLR per iteration, milestone 4
    for row in rows:
        assert row["total"] == pytest.approx(row["seg"] + row["cls"] + row["aux"], rel=1e-6)
    means = straight_run["result"].epoch_means
    assert means[0]["steps"] == 3
    assert means[0]["seg"] == pytest.approx(sum(r["seg"] for r in rows[:3]) / 3)


def test_summary_reports_counts_means_and_random_weights(straight_run):
    text = (straight_run["out"] / "training_summary.md").read_text()
    assert "RANDOM BACKBONE WEIGHTS" in text
    detector = straight_run["detector"]
    assert f"{detector.trainable_parameter_count():,} of" in text
    assert "| epoch | steps | total | seg | cls | aux |" in text
    assert "| 6 |" in text  # image count of the data set
    assert "wall time" in text


def test_progress_bar_shows_the_loss_components(backbone, data_spec, tmp_path, capsys):
    fit(make_detector(backbone), [data_spec], tmp_path / "run", quick_config(epochs=1), ClassNames.load(), torch.device("cpu"))
    err = capsys.readouterr().err
    for key in ("loss=", "seg=", "cls=", "aux="):
        assert key in err


def test_max_steps_per_epoch_and_log_every(backbone, data_spec, tmp_path):
    result = run_fit(make_detector(backbone), data_spec, tmp_path / "run", quick_config(max_steps_per_epoch=2, log_every=2))
    assert result.global_step == 4
    _, rows = read_train_log(tmp_path / "run" / "train_log.csv")
    assert [row["step"] for row in rows] == [2, 4]


def test_anomalous_images_without_pixel_labels_get_unknown_masks(backbone, tmp_path):
    root = tmp_path / "folder"
    from PIL import Image

    for state in ("normal", "abnormal"):
        (root / state).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (40 * index, 90, 200)).save(root / state / f"{index}.png")
    detector = make_detector(backbone)
    run_fit(detector, f"folder:{root}", tmp_path / "run", quick_config(epochs=1))
    per_image = torch.cat(detector.seen_masks).flatten(1)
    unknown = (per_image == -1).all(dim=1)
    empty = (per_image == 0).all(dim=1)
    # 2 anomalous images without masks: unknown; 2 normal images: known to be empty
    assert int(unknown.sum()) == 2 and int(empty.sum()) == 2


# ---------------------------------------------------------------- resume


def test_resume_repeats_the_straight_run_exactly(straight_run, backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=1))
    assert not (out / "checkpoints" / "epoch_002.safetensors").exists()
    fresh = make_detector(backbone, init_seed=77)  # a new process would start from other weights
    result = run_fit(fresh, data_spec, out, quick_config(epochs=2), resume=True)
    assert result.resumed_from_epoch == 1
    assert_same_state(own_state(fresh), straight_run["state"])
    assert read_train_log(out / "train_log.csv") == straight_run["log"]  # same loss at every step
    assert [m["total"] for m in result.epoch_means] == [m["total"] for m in straight_run["result"].epoch_means]


def test_interrupted_run_keeps_the_last_epoch_and_resumes(straight_run, backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    detector = make_detector(backbone)
    detector.fail_at_call = STEPS_PER_EPOCH + 2  # the second step of epoch 2
    with pytest.raises(KeyboardInterrupt):
        run_fit(detector, data_spec, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001.safetensors", "epoch_001.train_state.pt"]
    assert not (out / "model.safetensors").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name], "partial files left behind"
    _, rows = read_train_log(out / "train_log.csv")
    assert len(rows) == STEPS_PER_EPOCH + 1  # flushed as it went
    fresh = make_detector(backbone, init_seed=5)
    run_fit(fresh, data_spec, out, resume=True)
    assert_same_state(own_state(fresh), straight_run["state"])
    assert read_train_log(out / "train_log.csv") == straight_run["log"]


def test_resume_refuses_a_changed_config_but_accepts_more_epochs(straight_run, backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=1))
    with pytest.raises(ValueError, match=r"training\.lr: requested 0\.5"):
        run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=2, lr=0.5), resume=True)
    with pytest.raises(ValueError, match=r"data"):
        run_fit(make_detector(backbone), data_spec + "/stripes", out, quick_config(epochs=2), resume=True)
    result = run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=3, num_workers=0, log_every=1), resume=True)
    assert result.global_step == 3 * STEPS_PER_EPOCH


def test_check_resume_config_rejects_fewer_epochs_than_done():
    stored = {"method": "m", "method_config": {}, "training": TrainingConfig(epochs=5).to_dict()}
    requested = {**stored, "training": TrainingConfig(epochs=2).to_dict()}
    with pytest.raises(ValueError, match="3 are done"):
        check_resume_config(requested, stored, completed_epochs=3)
    check_resume_config({**stored, "training": TrainingConfig(epochs=9, num_workers=4).to_dict()}, stored, 3)


def test_resume_with_no_completed_epoch_starts_again_and_says_so(straight_run, backbone, data_spec, tmp_path, caplog):
    out = tmp_path / "run"
    detector = make_detector(backbone)
    detector.fail_at_call = 2  # killed in epoch 1: config.json and a train log, no checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_fit(detector, data_spec, out)
    assert epoch_checkpoints(out) == [] and (out / "config.json").is_file()
    fresh = make_detector(backbone)
    with caplog.at_level("WARNING", logger="zsad.engine.training"):
        result = run_fit(fresh, data_spec, out, resume=True)
    assert "no epoch of the run" in caplog.text and "starting it again from epoch 1" in caplog.text
    assert result.resumed_from_epoch is None
    assert_same_state(own_state(fresh), straight_run["state"])
    assert read_train_log(out / "train_log.csv") == straight_run["log"]  # the killed run's rows are gone


def test_a_damaged_newest_epoch_is_reported_and_the_intact_one_offered(straight_run, backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(straight_run["out"], out)
    damaged = out / "checkpoints" / "epoch_002.train_state.pt"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # truncated, as by a full disk or a bad copy
    with pytest.raises(DamagedCheckpointError) as refusal:
        run_fit(make_detector(backbone), data_spec, out, resume=True)
    message = str(refusal.value)
    assert "epoch_002.train_state.pt cannot be read" in message
    assert "newest intact epoch is 1" in message and "--resume-epoch 1" in message
    fresh = make_detector(backbone, init_seed=5)
    result = run_fit(fresh, data_spec, out, resume=True, resume_epoch=1)
    assert result.resumed_from_epoch == 1
    assert_same_state(own_state(fresh), straight_run["state"])
    assert read_train_log(out / "train_log.csv") == straight_run["log"]
    assert torch.load(damaged, weights_only=True)["epoch"] == 2  # written again, intact
    with pytest.raises(ValueError, match="no complete epoch 7"):
        run_fit(make_detector(backbone), data_spec, out, resume=True, resume_epoch=7)


def test_garbage_config_inside_a_checkpoint_names_the_file(straight_run, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"zsad_config": "{not json"})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: the config stored inside the checkpoint is not valid JSON"):
        read_checkpoint(path)


def test_non_empty_out_dir_needs_resume_or_overwrite(backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=2))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryNotEmptyError, match="--resume"):
        run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=1))
    run_fit(make_detector(backbone), data_spec, out, quick_config(epochs=1), overwrite=True)
    assert [epoch for epoch, _ in epoch_checkpoints(out)] == [1]  # the old epoch 2 is gone
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="only one"):
        run_fit(make_detector(backbone), data_spec, out, resume=True, overwrite=True)


# ---------------------------------------------------------------- errors


def test_non_finite_loss_stops_before_a_poisoned_checkpoint(backbone, data_spec, tmp_path):
    out = tmp_path / "run"
    detector = make_detector(backbone)
    detector.nan_at_call = STEPS_PER_EPOCH + 2
    with pytest.raises(TrainingError, match=r"not finite at epoch 2, step 5"):
        run_fit(detector, data_spec, out)
    assert [epoch for epoch, _ in epoch_checkpoints(out)] == [1]
    tensors, _ = read_checkpoint(out / "checkpoints" / "epoch_001.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_step_numbers_reach_the_host_in_one_sync_per_block_of_steps(backbone, data_spec, tmp_path, monkeypatch):
    from zsad.engine import training

    sizes = []
    original = training._TrainingRun._sync

    def counting_sync(self, pending, stats, log):
        if pending:
            sizes.append(len(pending))
        return original(self, pending, stats, log)

    monkeypatch.setattr(training._TrainingRun, "_sync", counting_sync)
    monkeypatch.setattr(training, "HOST_SYNC_EVERY", 2)
    run_fit(make_detector(backbone), data_spec, tmp_path / "run")
    assert sizes == [2, 1, 2, 1]  # 3 steps an epoch: a full block of 2, then the epoch's end
    _, rows = read_train_log(tmp_path / "run" / "train_log.csv")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]


def test_unreadable_images_are_skipped_and_reported_once(backbone, tmp_path):
    root = tmp_path / "mvtec"
    generate_mvtec_like(root, categories=["disc"], n_train=0, n_good=2, n_defect_per_kind=1, size=IMAGE_SIZE)
    broken = root / "disc" / "test" / "good" / "999.png"
    broken.write_text("not an image")
    result = run_fit(make_detector(backbone), f"mvtec:{root}", tmp_path / "run", quick_config(epochs=2))
    assert result.unreadable == [str(broken)]
    assert result.epoch_means[0]["steps"] == 4  # 7 items, 6 readable, batch 2: the broken one is dropped
    assert "unreadable images skipped: 1" in (tmp_path / "run" / "training_summary.md").read_text()


def test_bf16_on_cpu_and_untrainable_methods_are_refused(backbone, data_spec, tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        run_fit(make_detector(backbone), data_spec, tmp_path / "a", quick_config(precision="bf16"))
    from zsad.methods import build_method

    with pytest.raises(ValueError, match="no trainable parameters"):
        run_fit(build_method("zeroshot", backbone), data_spec, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_activation_checkpointing_is_set_on_the_method_config(backbone, data_spec, tmp_path):
    detector = make_detector(backbone)
    run_fit(detector, data_spec, tmp_path / "run", quick_config(epochs=1, activation_checkpointing=True))
    assert detector.config.activation_checkpointing is True
    _, stored = read_checkpoint(resolve_checkpoint(tmp_path / "run"))
    assert stored["method_config"]["activation_checkpointing"] is True


def test_train_log_extends_its_header_for_a_late_component(tmp_path):
    with TrainLog(tmp_path / "log.csv") as log:
        log.write(1, 1, 0.1, 1.0, {"seg": 1.0})
        log.write(1, 2, 0.1, 3.0, {"seg": 1.0, "extra": 2.0})
    columns, rows = read_train_log(tmp_path / "log.csv")
    assert columns == ["epoch", "step", "lr", "total", "seg", "extra"]
    assert rows[0]["extra"] is None and rows[1]["extra"] == 2.0
    with TrainLog(tmp_path / "log.csv", resume_after_step=1) as log:
        pass
    assert [row["step"] for row in read_train_log(tmp_path / "log.csv")[1]] == [1]


# ---------------------------------------------------------------- torchrun


def test_context_from_environment():
    assert context_from_environment({}) == DistributedContext()
    context = context_from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (context.rank, context.world_size, context.local_rank, context.active, context.is_main) == (2, 4, 0, True, False)
    with pytest.raises(ValueError):
        context_from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    assert process_device(torch.device("cuda"), context) == torch.device("cuda", 0)
    assert process_device(torch.device("cpu"), context) == torch.device("cpu")
    assert context.local_world_size == 4
    assert context_from_environment({"WORLD_SIZE": "8", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}).local_world_size == 2


def test_default_num_workers_shares_the_free_cores():
    from zsad.engine.runtime import default_num_workers

    assert default_num_workers(cpus=1) == 0  # a worker would only compete with the step
    assert default_num_workers(cpus=2) == 1
    assert default_num_workers(cpus=64) == 8  # capped
    assert default_num_workers(processes_per_machine=4, cpus=16) == 3
    assert default_num_workers(processes_per_machine=8, cpus=8) == 0


# DistributedDataParallel.__init__'s keywords in torch 2.1, the oldest supported release.
TORCH_2_1_DDP_KEYWORDS = {
    "device_ids", "output_device", "dim", "broadcast_buffers", "process_group", "bucket_cap_mb",
    "find_unused_parameters", "check_reduction", "gradient_as_bucket_view", "static_graph",
}


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("cuda", 1)])
def test_ddp_options_exist_in_the_oldest_supported_torch_and_in_this_one(device):
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    oldest = ddp_options(device, accepted=TORCH_2_1_DDP_KEYWORDS)
    assert set(oldest) <= TORCH_2_1_DDP_KEYWORDS
    assert oldest["broadcast_buffers"] is False
    assert oldest["device_ids"] == ([1] if device.type == "cuda" else None)
    installed = inspect.signature(DistributedDataParallel.__init__).parameters
    current = ddp_options(device)
    assert set(current) <= set(installed)
    assert False in (current.get("broadcast_buffers"), current.get("forward_sync_buffers"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_path_with_gloo_matches_the_single_process_run(straight_run, backbone, data_spec, tmp_path, monkeypatch):
    import torch.distributed as dist

    for key, value in {
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    detector = make_detector(backbone)
    run_fit(detector, data_spec, tmp_path / "run")
    assert not dist.is_initialized()
    assert all(detector.forward_modes)
    assert_same_state(own_state(detector), straight_run["state"])


# ---------------------------------------------------------------- MoECLIP


def test_moeclip_trains_two_steps_with_all_its_losses(backbone, data_spec, tmp_path):
    from zsad.methods import build_method

    torch.manual_seed(0)
    detector = build_method("moeclip", backbone, {})
    before = {k: v.clone() for k, v in detector.trainable_state_dict().items()}
    result = run_fit(detector, data_spec, tmp_path / "run", quick_config(epochs=1, max_steps_per_epoch=2, lr=5e-4))
    assert result.global_step == 2
    columns, rows = read_train_log(tmp_path / "run" / "train_log.csv")
    assert {"seg", "cls", "etf", "balance"} <= set(columns)
    assert all(row["etf"] > 0 and row["balance"] >= 0 for row in rows)
    after = detector.trainable_state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("lora_b" in k for k in changed) and any("router" in k for k in changed)


def test_the_step_feeds_the_model_the_batch_augmented_on_the_device(backbone, data_spec, tmp_path):
    """fit's first batch reaches the model as training_batch makes it from the items and
    their own draws: augmented (not the plain masks), on the training device."""
    from zsad.engine.train_data import build_training_data

    config = quick_config(epochs=1, max_steps_per_epoch=1)
    detector = make_detector(backbone)
    run_fit(detector, data_spec, tmp_path / "run", config)
    data = build_training_data([data_spec], IMAGE_SIZE, config)
    keys = [(1, index) for index in epoch_order(len(data.dataset), config.seed, 1)[:2]]
    raw = collate([data.dataset[key] for key in keys])
    expected = training_batch(raw, torch.device("cpu"))
    assert torch.equal(detector.seen_masks[0], expected.masks)
    plain = training_batch(collate([data.dataset.dataset[index] for _, index in keys]), torch.device("cpu"))
    assert not torch.equal(expected.masks, plain.masks) or not torch.equal(expected.images, plain.images)


def test_worker_processes_load_the_same_augmented_batches(straight_run, backbone, data_spec, tmp_path):
    detector = make_detector(backbone)
    run_fit(detector, data_spec, tmp_path / "run", quick_config(num_workers=2))
    assert_same_state(own_state(detector), straight_run["state"])


def test_cached_resized_images_give_the_same_augmented_items(data_spec):
    from zsad.engine.train_data import build_training_data

    config = quick_config()
    plain = build_training_data([data_spec], IMAGE_SIZE, config, cache_budget=0)
    cached = build_training_data([data_spec], IMAGE_SIZE, config, cache_budget=2**30)
    parts = cached.dataset.dataset.datasets
    assert all(len(part._resized) == len(part) for part in parts)
    assert all(not part._resized for part in plain.dataset.dataset.datasets)
    for index in range(len(plain.dataset)):
        first, second = plain.dataset[(1, index)], cached.dataset[(1, index)]
        for key in ("image", "mask", "original_size"):
            assert torch.equal(first[key], second[key]), key
        assert (first["label"], first["path"], first["error"]) == (second["label"], second["path"], second["error"])


def test_image_cache_respects_its_budget_and_switch(data_spec):
    from zsad.engine.train_data import build_training_data, image_cache_budget

    too_small = build_training_data([data_spec], IMAGE_SIZE, quick_config(), cache_budget=IMAGE_SIZE**2)
    switched_off = build_training_data([data_spec], IMAGE_SIZE, quick_config(cache_images=False), cache_budget=2**30)
    for data in (too_small, switched_off):
        assert all(not part._resized for part in data.dataset.dataset.datasets)
    assert 0 <= image_cache_budget(2) <= image_cache_budget(1) <= 8 * 2**30


def test_the_saved_schedule_state_loads_with_a_weights_only_loader_and_resumes_the_schedule(tmp_path):
    from collections import Counter

    from zsad.engine.run_folder import load_scheduler_state, scheduler_state_to_save

    def schedule():
        optimiser = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return optimiser, torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=[2, 4], gamma=0.5)

    optimiser, scheduler = schedule()
    for _ in range(3):
        optimiser.step()
        scheduler.step()
    state = scheduler_state_to_save(scheduler)
    assert not any(isinstance(value, Counter) for value in state.values())  # torch 2.1's loader refuses Counter
    torch.save(state, tmp_path / "state.pt")
    optimiser2, resumed = schedule()
    load_scheduler_state(resumed, torch.load(tmp_path / "state.pt", weights_only=True))
    assert isinstance(resumed.milestones, Counter)
    optimiser2.param_groups[0]["lr"] = optimiser.param_groups[0]["lr"]  # the optimiser state travels separately
    for _ in range(3):
        optimiser.step(), optimiser2.step()
        scheduler.step(), resumed.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()
    assert scheduler.get_last_lr() == [0.25]
