"""`fit`: train any method's own modules on auxiliary data sets, one loop for all.

The loop knows nothing about the method: it calls ``detector(images, class_names, masks,
labels)`` in training mode and minimises the sum of ``output.losses`` (already weighted
by the method) with the optimiser and schedule of the method's ``configure_optimisation``
hook. The frozen CLIP backbone never gets any. The final model is the last epoch's: nothing is selected on test
data.

The run folder's layout lives in ``run_folder.py``. Every file is written atomically.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..checkpoints import load_method_state, read_checkpoint, save_checkpoint
from ..data import collate
from ..errors import InvalidInputError, ZsadError
from ..fileio import atomic_save, atomic_write_json, atomic_write_text
from ..methods.base import AnomalyDetector
from ..methods.build import full_config
from ..output_lock import claim_output_folder
from ..text import ClassNames
from .compilation import TrainingCall, check_compile, in_process_compile
from .distributed import DistributedContext, all_ranks_agree, barrier, distributed_session, wrap_for_training
from .manifest import MANIFEST_NAME, reproducibility_manifest
from .monitor import MONITOR_CSV, MONITOR_NOTE, MONITOR_PLOT, record_monitor
from .run_folder import (
    CONFIG_FILE_NAME,
    CURVES_NAME,
    FINAL_CHECKPOINT_NAME,
    SUMMARY_NAME,
    TRAIN_LOG_NAME,
    ResumePoint,
    check_resume_config,
    drop_epochs_after,
    epoch_checkpoint_path,
    latest_resume_point,
    load_scheduler_state,
    prepare_out_dir,
    scheduler_state_to_save,
    train_state_path,
)
from .runtime import autocast, check_training_precision, default_num_workers
from .train_config import TrainingConfig
from .train_data import (
    EpochSampler,
    TrainingBatch,
    build_training_data,
    derive_seed,
    image_cache_budget,
    seed_everything,
    training_batch,
)
from .train_log import TrainLog, summary_markdown, write_loss_curves

logger = logging.getLogger(__name__)

# Steps whose losses stay on the device before one host sync checks, logs and shows
# them (a sync per step stalls a GPU on every .item()).
HOST_SYNC_EVERY = 16


class TrainingError(ZsadError, RuntimeError):
    """Training had to stop (non-finite loss or gradient, a method without losses...)."""


@dataclass
class TrainingResult:
    """What a finished `fit` reports. epoch_means: per epoch {epoch, steps, total, <loss>...}."""

    out_dir: Path
    model_path: Path
    epochs_completed: int
    global_step: int
    epoch_means: list[dict[str, float]]
    image_counts: dict[str, int]
    unreadable: list[str]
    wall_time_s: float
    resumed_from_epoch: int | None = None


@dataclass
class _EpochStats:
    """Running sums of the step losses of one epoch (rank 0's batches)."""

    steps: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        self.steps += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: total / self.steps for key, total in self.sums.items()}


@dataclass
class _PendingStep:
    """One optimiser step whose numbers are still on the device.

    values: (1 + n_losses + n_monitors + 1,) float32 [total, each loss, each monitor,
    gradient norm]; names: the loss then the monitor names in that order (without "total"
    and the norm). Monitors (``DetectorOutput.monitors``) are logged, never optimised."""

    epoch: int
    step: int
    lr: float
    names: list[str]
    values: torch.Tensor


# ---------------------------------------------------------------- run directory and config


def run_config(
    detector: AnomalyDetector, config: TrainingConfig, train_specs: list[str], class_names: ClassNames, categories: list[str]
) -> dict[str, Any]:
    """The config stored in config.json and in every checkpoint of the run: the detector's
    full config, the training settings, the data specs and the prompt words per category."""
    return {
        **full_config(detector),
        "training": config.to_dict(),
        "data": list(train_specs),
        "class_names": {key: class_names.resolve(key) for key in categories},
    }


# ---------------------------------------------------------------- checks


def trainable_parameters(detector: AnomalyDetector) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates; raises when there are none or the backbone is not frozen."""
    if any(p.requires_grad for p in detector.backbone.parameters()):
        raise ValueError("the CLIP backbone must stay frozen, but some of its parameters require gradients")
    parameters = [p for p in detector.parameters() if p.requires_grad]
    if not parameters:
        raise InvalidInputError(f"method '{detector.name}' has no trainable parameters: it needs no training")
    return parameters


def apply_activation_checkpointing(detector: AnomalyDetector, enabled: bool) -> None:
    """Switch on the method's ``activation_checkpointing`` setting (methods without one
    cannot recompute activations: asking for it is an error)."""
    if not enabled:
        return
    if not hasattr(detector.config, "activation_checkpointing"):
        raise InvalidInputError(f"method '{detector.name}' does not support activation checkpointing")
    detector.config.activation_checkpointing = True


def _gradient_norm(parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """() float32 on the parameters' device: the global L2 norm of the gradients (no host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), device=parameters[0].device)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


# ---------------------------------------------------------------- the loop


class _TrainingRun:
    """One call of :func:`fit`: the objects of a run and its loop."""

    def __init__(
        self,
        detector: AnomalyDetector,
        train_specs: list[str],
        out_dir: Path,
        config: TrainingConfig,
        class_names: ClassNames,
        device: torch.device,
        context: DistributedContext,
        show_progress: bool,
    ):
        self.detector = detector
        self.train_specs = train_specs
        self.out_dir = out_dir
        self.config = config
        self.class_names = class_names
        self.device = device
        self.context = context
        self.show_progress = show_progress and context.is_main
        self.data = build_training_data(
            train_specs, detector.backbone.image_size, config, image_cache_budget(context.local_world_size)
        )
        self.num_workers = (
            default_num_workers(context.local_world_size) if config.num_workers is None else config.num_workers
        )
        self.run_config = run_config(detector, config, train_specs, class_names, self.data.categories)
        self.global_step = 0
        self.epoch_means: list[dict[str, float]] = []
        self.unreadable: set[str] = set()
        self.previous_wall_time = 0.0
        self.started = time.monotonic()
        self.last_checkpoint: Path | None = None

    def restore(self, point: ResumePoint) -> None:
        """Load the last completed epoch's weights (optimiser state: see ``build_optimiser``)."""
        tensors, stored = read_checkpoint(point.checkpoint)
        check_resume_config(self.run_config, stored, point.epoch, self.detector.config.runtime_fields)
        load_method_state(self.detector, tensors, str(point.checkpoint))
        self.global_step = point.global_step
        self.epoch_means = list(point.epoch_means)
        self.unreadable = set(point.unreadable)
        self.previous_wall_time = point.wall_time_s
        self.last_checkpoint = point.checkpoint

    def build_optimiser(self, point: ResumePoint | None) -> None:
        """The method's optimiser and schedule (its ``configure_optimisation`` hook), sized
        by the steps of an epoch; a resumed run continues their saved state."""
        self.trainable = trainable_parameters(self.detector)
        self.optimizer, self.scheduler = self.detector.configure_optimisation(self.config, self.steps_per_epoch())
        if point is not None:
            self.optimizer.load_state_dict(point.optimizer)
            load_scheduler_state(self.scheduler, point.scheduler)

    def steps_per_epoch(self) -> int:
        """Optimiser steps of one epoch of this rank (the last batch may be short)."""
        steps = len(self._loader(1))
        return steps if self.config.max_steps_per_epoch is None else min(steps, self.config.max_steps_per_epoch)

    def wall_time(self) -> float:
        return self.previous_wall_time + time.monotonic() - self.started

    def _note_unreadable(self, errors: dict[str, str]) -> None:
        for path, error in errors.items():
            if path not in self.unreadable:
                self.unreadable.add(path)
                logger.warning("skipping unreadable training image %s: %s", path, error)

    def _loader(self, epoch: int) -> DataLoader:
        sampler = EpochSampler(len(self.data.dataset), self.config.seed, epoch, self.context.rank, self.context.world_size)
        return DataLoader(
            self.data.dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            # Keeps the loader's own draws (worker base seeds) off the global generator.
            generator=torch.Generator().manual_seed(derive_seed(self.config.seed, epoch, self.context.rank, 1)),
        )

    def _step(self, model: TrainingCall, batch: TrainingBatch, epoch: int) -> _PendingStep:
        """One optimiser step on a batch already on the device (moved, augmented and
        normalised by ``training_batch``), without waiting for it: the losses and the
        gradient norm stay on it until :meth:`_sync` checks and logs them."""
        words = [self.class_names.resolve(key) for key in batch.categories]
        with autocast(self.device, self.config.precision):
            output = model(batch.images, words, batch.masks, batch.labels)
        if not output.losses:
            raise TrainingError(
                f"method '{self.detector.name}' returned no losses in training mode (is it in train mode "
                "and given masks and labels?)"
            )
        losses = {name: value.float() for name, value in output.losses.items()}
        monitors = {name: value.detach().float() for name, value in output.monitors.items()}
        clash = sorted(set(losses) & set(monitors))
        if clash:
            raise TrainingError(f"method '{self.detector.name}' names {clash} both a loss and a monitor")
        total = torch.stack(list(losses.values())).sum()
        if not total.requires_grad:
            raise TrainingError(f"the losses of '{self.detector.name}' do not depend on any trainable parameter")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = _gradient_norm(self.trainable)
        self.optimizer.step()
        self.scheduler.step()
        values = torch.stack([total.detach(), *(v.detach() for v in losses.values()), *monitors.values(), norm])
        return _PendingStep(epoch, self.global_step + 1, lr, [*losses, *monitors], values)

    def _sync(self, pending: list[_PendingStep], stats: _EpochStats, log: TrainLog | None) -> None:
        """Bring the pending steps' numbers to the host at once (one device sync), stop
        on the first non-finite loss or gradient, then log and count them."""
        if not pending:
            return
        rows = torch.cat([step.values for step in pending]).tolist()
        offset = 0
        numbers = []
        for step in pending:
            numbers.append(rows[offset : offset + len(step.values)])
            offset += len(step.values)
        finite = [all(math.isfinite(v) for v in row) for row in numbers]
        if not all_ranks_agree(all(finite), self.context, self.device):
            bad = next((step for step, ok in zip(pending, finite) if not ok), pending[0])
            row = numbers[pending.index(bad)]
            what = "loss" if not all(math.isfinite(v) for v in row[:-1]) else "gradient"
            raise TrainingError(
                f"the {what} is not finite at epoch {bad.epoch}, step {bad.step} "
                f"({dict(zip(['total', *bad.names, 'grad_norm'], row))}); stopped within {len(pending)} steps "
                f"of it, and nothing of this epoch was saved (last checkpoint: {self.last_checkpoint}). "
                "Try a lower --lr."
            )
        for step, row in zip(pending, numbers):
            values = dict(zip(["total", *step.names], row[:-1]))
            stats.add(values)
            if log is not None and step.step % self.config.log_every == 0:
                log.write(step.epoch, step.step, step.lr, values["total"], {k: v for k, v in values.items() if k != "total"})
        pending.clear()

    def run_epoch(self, model: TrainingCall, epoch: int, log: TrainLog | None) -> dict[str, float]:
        config = self.config
        seed_everything(derive_seed(config.seed, epoch, self.context.rank))
        loader = self._loader(epoch)
        planned = self.steps_per_epoch()
        model.model.train()
        stats = _EpochStats()
        pending: list[_PendingStep] = []
        steps = 0
        bar = tqdm(
            total=planned, desc=f"epoch {epoch}/{config.epochs}", disable=not self.show_progress,
            file=sys.stderr, dynamic_ncols=True,
        )
        try:
            for raw in loader:
                batch = training_batch(raw, self.device)
                self._note_unreadable(dict(raw.unreadable))
                if not all_ranks_agree(batch is not None, self.context, self.device):
                    continue
                pending.append(self._step(model, batch, epoch))
                self.global_step += 1
                steps += 1
                bar.update(1)
                if len(pending) >= HOST_SYNC_EVERY or steps == planned:
                    self._sync(pending, stats, log)
                    running = stats.means()
                    bar.set_postfix({"loss": running["total"], **{k: v for k, v in running.items() if k != "total"}})
                if steps == planned:
                    break
            self._sync(pending, stats, log)
        except BaseException:
            # Interrupted (single process): the steps already taken still reach the log.
            if pending and not self.context.active:
                with contextlib.suppress(TrainingError):
                    self._sync(pending, stats, log)
            raise
        finally:
            bar.close()
        if stats.steps == 0:
            raise TrainingError(f"epoch {epoch} had no readable images: nothing to train on")
        return {"epoch": epoch, "steps": stats.steps, **stats.means()}

    def save_epoch(self, epoch: int) -> None:
        path = epoch_checkpoint_path(self.out_dir, epoch)
        save_checkpoint(path, self.detector.trainable_state_dict(), self.run_config)
        state = {
            "epoch": epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state_to_save(self.scheduler),
            "epoch_means": self.epoch_means,
            "wall_time_s": self.wall_time(),
            "unreadable": sorted(self.unreadable),
        }
        atomic_save(train_state_path(path), lambda temporary: torch.save(state, temporary))
        self.last_checkpoint = path

    def finish(self) -> Path:
        """model.safetensors, training_summary.md, loss_curves.png."""
        model_path = self.out_dir / FINAL_CHECKPOINT_NAME
        save_checkpoint(model_path, self.detector.trainable_state_dict(), self.run_config)
        counts = (self.detector.trainable_parameter_count(), sum(p.numel() for p in self.detector.parameters()))
        summary = summary_markdown(
            self.run_config, self.detector.backbone.describe(), counts, self.data.image_counts,
            self.epoch_means, self.global_step, self.wall_time(), sorted(self.unreadable),
        )
        atomic_write_text(self.out_dir / SUMMARY_NAME, summary)
        write_loss_curves(self.out_dir / TRAIN_LOG_NAME, self.out_dir / CURVES_NAME)
        return model_path


def fit(
    detector: AnomalyDetector,
    train_specs: list[str],
    out_dir: str | Path,
    config: TrainingConfig,
    class_names: ClassNames,
    device: torch.device,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    resume_epoch: int | None = None,
    notify: Callable[[str], None] | None = None,
    compile_backend: str | Callable = "inductor",
    sources: dict[str, str] | None = None,
    monitor: Callable[[int, AnomalyDetector], dict[str, float]] | None = None,
) -> TrainingResult:
    """Train ``detector``'s own modules on the data sets ``train_specs`` (``KIND:PATH``).

    Writes the run into ``out_dir`` (see the module docstring). ``resume`` continues from
    the last completed epoch (or from ``resume_epoch``), after checking that the stored
    config matches (``epochs`` may be raised); with no completed epoch it starts the run
    again and says so (through ``notify``, default: a logged warning). A fresh run refuses a
    non-empty ``out_dir`` unless ``overwrite``.
    Under torchrun (WORLD_SIZE/RANK/LOCAL_RANK set) every rank trains on its share of
    each epoch through DDP and only rank 0 writes files. Raises TrainingError when the
    loss or gradient stops being finite (the previous epoch's checkpoint stays valid).
    Each epoch reseeds python's, numpy's and torch's global generators from
    (config.seed, epoch, rank), which is what makes a resumed run repeat the straight one.
    ``config.compile`` compiles the forward pass and losses with torch.compile's
    ``compile_backend`` (not a user option: tests use a fast one); checkpoints hold the
    detector's own state either way.
    ``sources`` ({setting: where it came from}, see ``zsad.recipes``) is recorded in
    config.json; the run folder also gets reproducibility.json (see ``manifest``).
    ``monitor(epoch, detector)`` runs after each epoch on rank 0 and returns numbers for
    a curve (``--monitor``): they are logged in monitor.csv and select nothing; the
    detector is in train mode again afterwards and the model stays the last epoch's.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise InvalidInputError("--resume continues the run in --out, --overwrite starts it over: pass only one")
    check_training_precision(device, config.precision)  # refuses bf16 on the CPU before any work
    check_compile(config.compile, device, detector)  # before any work, as TrainingCall would
    apply_activation_checkpointing(detector, config.activation_checkpointing)
    trainable_parameters(detector)
    with distributed_session(device) as (context, device), contextlib.ExitStack() as held:
        if context.is_main:  # one run per folder; the other ranks follow rank 0
            held.enter_context(claim_output_folder(out_dir))
        point = latest_resume_point(out_dir, resume_epoch) if resume else None
        restart = resume and point is None
        if restart and context.is_main:
            (notify or logger.warning)(f"--resume: no epoch of the run in {out_dir} was completed; starting it again from epoch 1")
        prepare_out_dir(out_dir, resume and not restart, overwrite or restart, context)
        if point is not None and context.is_main:
            drop_epochs_after(out_dir, point.epoch)
        run = _TrainingRun(detector, train_specs, out_dir, config, class_names, device, context, show_progress)
        if point is not None:
            run.restore(point)
        detector.to(device)
        run.build_optimiser(point)
        model = TrainingCall(wrap_for_training(detector, context, device), detector, device, config.compile, compile_backend)
        if config.compile != "off":
            held.enter_context(in_process_compile())  # each epoch forks new loader workers
        if context.is_main:
            atomic_write_json(out_dir / CONFIG_FILE_NAME, {**run.run_config, "sources": sources or {}})
            atomic_write_json(
                out_dir / MANIFEST_NAME, reproducibility_manifest(config.seed, device, run.data.manifest_entries)
            )
            if point is not None and point.epoch < config.epochs:
                # The finished model of a shorter run would shadow the epochs to come.
                (out_dir / FINAL_CHECKPOINT_NAME).unlink(missing_ok=True)
        start_epoch = 1 if point is None else point.epoch + 1
        log = TrainLog(out_dir / TRAIN_LOG_NAME, None if point is None else point.global_step) if context.is_main else None
        with log if log is not None else contextlib.nullcontext():
            for epoch in range(start_epoch, config.epochs + 1):
                run.epoch_means.append(run.run_epoch(model, epoch, log))
                if context.is_main:
                    run.save_epoch(epoch)
                    if monitor is not None:
                        record_monitor(out_dir, epoch, monitor, detector)
        model_path = out_dir / FINAL_CHECKPOINT_NAME
        if context.is_main:
            model_path = run.finish()
            if monitor is not None:
                with (out_dir / SUMMARY_NAME).open("a", encoding="utf-8") as summary:
                    summary.write(f"\n{MONITOR_NOTE} Curve: {MONITOR_CSV}, {MONITOR_PLOT}.\n")
        barrier(context)
        return TrainingResult(
            out_dir=out_dir,
            model_path=model_path,
            epochs_completed=config.epochs,
            global_step=run.global_step,
            epoch_means=run.epoch_means,
            image_counts=run.data.image_counts,
            unreadable=sorted(run.unreadable),
            wall_time_s=run.wall_time(),
            resumed_from_epoch=None if point is None else point.epoch,
        )
