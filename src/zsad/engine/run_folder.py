"""The layout of a training run's folder, known here only.

OUT/config.json, OUT/checkpoints/epoch_NNN.safetensors (+ .train_state.pt with the
optimiser, scheduler and loop state), OUT/train_log.csv and, once finished,
OUT/model.safetensors, OUT/training_summary.md and OUT/loss_curves.png.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

# The names a run folder is read back by live with resolve_checkpoint, below the engine;
# epoch_checkpoints and resolve_checkpoint are re-exported for the engine's callers.
from ..checkpoints import (  # noqa: F401
    CHECKPOINT_DIR_NAME,
    FINAL_CHECKPOINT_NAME,
    CheckpointError,
    check_config_fits,
    epoch_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
)
from ..errors import InvalidInputError
from ..fileio import OutputExistsError
from ..output_lock import LOCK_NAME
from .distributed import DistributedContext, barrier
from .train_config import TrainingConfig

CONFIG_FILE_NAME = "config.json"
TRAIN_LOG_NAME = "train_log.csv"
SUMMARY_NAME = "training_summary.md"
CURVES_NAME = "loss_curves.png"
_RUN_FILES = (CONFIG_FILE_NAME, TRAIN_LOG_NAME, SUMMARY_NAME, CURVES_NAME, FINAL_CHECKPOINT_NAME)


class RunDirectoryNotEmptyError(OutputExistsError):
    """A fresh run was asked for in a directory that already holds files."""

    def __init__(self, path: Path):
        self.path = Path(path)
        FileExistsError.__init__(
            self,
            f"output folder {self.path} is not empty; pass --resume to continue the run in it, "
            "--overwrite to start over, or choose another --out",
        )


def epoch_checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / CHECKPOINT_DIR_NAME / f"epoch_{epoch:03d}.safetensors"


def train_state_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".train_state.pt")


@dataclass
class ResumePoint:
    """The state saved after the last completed epoch."""

    checkpoint: Path
    epoch: int
    global_step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch_means: list[dict[str, float]]
    wall_time_s: float
    unreadable: list[str]


def check_resume_config(
    requested: dict[str, Any], stored: dict[str, Any], completed_epochs: int, method_runtime_fields: Sequence[str] = ()
) -> None:
    """Raise CheckpointError naming every difference between the run's stored config and
    the requested one, apart from the runtime fields of the training config and of the
    method's config (more epochs, workers, logging rate, activation checkpointing)."""
    if requested["training"]["epochs"] < completed_epochs:
        raise CheckpointError(
            f"cannot resume: training.epochs: requested {requested['training']['epochs']}, but {completed_epochs} are done already"
        )
    ignored = [f"training.{name}" for name in TrainingConfig.runtime_fields]
    ignored += [f"method_config.{name}" for name in method_runtime_fields]
    check_config_fits(requested, stored, "cannot resume: the run", ignored)


def read_run_config(out_dir: Path) -> dict[str, Any] | None:
    """The config.json of the run in ``out_dir`` (the base of a resumed run's settings), or
    None when there is none (nothing was ever started there).

    Raises:
        ValueError: config.json is damaged (not JSON, or not a run's config); names the file.
    """
    path = Path(out_dir) / CONFIG_FILE_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInputError(
            f"{path} is damaged ({error}): it is not the JSON config of a run. Restore it, or start the run "
            "again with --overwrite."
        ) from None
    if not isinstance(config, dict) or not {"method", "training", "data"} <= set(config):
        raise InvalidInputError(f"{path} is not the config of a zsad run (method, training, data missing); start the run again with "
                                "--overwrite")
    return config


def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool, context: DistributedContext) -> None:
    """Refuse a non-empty folder for a fresh run; with ``overwrite`` remove the files of a
    previous run (only those: other files stay)."""
    occupied = out_dir.is_dir() and any(path.name != LOCK_NAME for path in out_dir.iterdir())
    if occupied and not resume and not overwrite:
        raise RunDirectoryNotEmptyError(out_dir)
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in _RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
            for _, checkpoint in epoch_checkpoints(out_dir):
                checkpoint.unlink()
                train_state_path(checkpoint).unlink(missing_ok=True)
    barrier(context)


def scheduler_state_to_save(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """The schedule's state dict with ``collections.Counter`` values (MultiStepLR's
    milestones) as plain dicts: torch's weights-only loader refuses Counter before 2.4, so
    a train state holding one could not be resumed there."""
    return {key: dict(value) if isinstance(value, Counter) else value for key, value in scheduler.state_dict().items()}


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    """Load a state written by :func:`scheduler_state_to_save` (or a plain ``state_dict``):
    values the schedule keeps as a Counter become Counters again."""
    scheduler.load_state_dict(
        {key: Counter(value) if isinstance(getattr(scheduler, key, None), Counter) else value for key, value in state.items()}
    )


class DamagedCheckpointError(CheckpointError):
    """An epoch's checkpoint or train state cannot be read (truncated, not a zsad file...)."""


def _resume_point(epoch: int, path: Path) -> ResumePoint:
    """Read and check epoch ``epoch``'s checkpoint and train state; DamagedCheckpointError names the bad file."""
    state_file = train_state_path(path)
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, unpickling refused...
        first_sentence = str(error).splitlines()[0].split(". ")[0][:200] if str(error) else ""
        raise DamagedCheckpointError(
            f"{state_file} cannot be read (truncated or not a train state: {type(error).__name__}: {first_sentence})"
        ) from error
    if not isinstance(state, dict) or state.get("epoch") != epoch:
        raise DamagedCheckpointError(f"{state_file} does not hold the train state of epoch {epoch}")
    try:
        read_checkpoint(path)
    except CheckpointError as error:
        raise DamagedCheckpointError(str(error)) from error
    return ResumePoint(
        checkpoint=path,
        epoch=epoch,
        global_step=state["global_step"],
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        epoch_means=state["epoch_means"],
        wall_time_s=state["wall_time_s"],
        unreadable=list(state["unreadable"]),
    )


def latest_resume_point(out_dir: Path, from_epoch: int | None = None) -> ResumePoint | None:
    """The state after the last completed epoch (or after ``from_epoch``); None when no
    epoch was completed, so the run starts again.

    Raises:
        DamagedCheckpointError: the newest epoch's files are damaged. The message names
            them and the newest intact epoch, which ``from_epoch`` then selects.
        ValueError: ``from_epoch`` has no complete checkpoint.
    """
    complete = [(epoch, path) for epoch, path in epoch_checkpoints(out_dir) if train_state_path(path).is_file()]
    if from_epoch is not None:
        chosen = [(epoch, path) for epoch, path in complete if epoch == from_epoch]
        if not chosen:
            done = ", ".join(str(epoch) for epoch, _ in complete) or "none"
            raise InvalidInputError(f"--resume-epoch {from_epoch}: {out_dir / CHECKPOINT_DIR_NAME} holds no complete epoch {from_epoch} "
                                    f"(complete epochs: {done})")
        return _resume_point(*chosen[0])
    if not complete:
        return None
    try:
        return _resume_point(*complete[-1])
    except DamagedCheckpointError as damage:
        for epoch, path in reversed(complete[:-1]):
            try:
                _resume_point(epoch, path)
            except DamagedCheckpointError:
                continue
            raise DamagedCheckpointError(
                f"--resume: the newest epoch ({complete[-1][0]}) is damaged: {damage}. The newest intact epoch is "
                f"{epoch} ({path}). To continue from it (training epoch {epoch + 1} again), add --resume-epoch {epoch}."
            ) from None
        raise DamagedCheckpointError(
            f"--resume: the newest epoch ({complete[-1][0]}) is damaged: {damage}, and no earlier epoch is intact. "
            "Start the run again with --overwrite."
        ) from None


def drop_epochs_after(out_dir: Path, epoch: int) -> None:
    """Remove the checkpoints of epochs after ``epoch`` (superseded when resuming from it)."""
    for later, path in epoch_checkpoints(out_dir):
        if later > epoch:
            path.unlink()
            train_state_path(path).unlink(missing_ok=True)
