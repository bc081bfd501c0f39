"""The per-method optimisation hook: Adam over the parameter groups and a per-step
schedule with an optional linear warm-up counted in epochs."""
from __future__ import annotations

import pytest
import torch

from zsad.engine.train_config import TrainingConfig
from zsad.methods.base import step_schedule


def learning_rates(config: TrainingConfig, steps_per_epoch: int, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = step_schedule(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_warm_up_rises_linearly_over_its_epochs_then_milestones_decay():
    config = TrainingConfig(lr=1.0, warmup_epochs=2, milestones=(6,), gamma=0.5)
    rates = learning_rates(config, steps_per_epoch=2, steps=8)
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5, 0.5])


def test_without_warm_up_the_schedule_is_the_plain_step_decay():
    config = TrainingConfig(lr=0.8, milestones=(2, 3), gamma=0.5)
    assert learning_rates(config, steps_per_epoch=5, steps=5) == pytest.approx([0.8, 0.8, 0.4, 0.2, 0.2])
    assert isinstance(step_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), config, 5),
                      torch.optim.lr_scheduler.MultiStepLR)


def test_negative_warm_up_is_refused():
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainingConfig(warmup_epochs=-1)
