"""Optimizer and scheduler wiring from partial configs."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from lightning_modules.optimization import configure_optimization, warmup_cosine


def lrs(scheduler, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    values = lrs(warmup_cosine(opt, total_steps=10, warmup_fraction=0.2), 10)
    assert values[:2] == pytest.approx([0.5, 1.0])
    assert values[2] == pytest.approx(1.0)
    assert values[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_schedulers_that_need_total_steps_get_them_from_the_trainer():
    net = nn.Linear(2, 2)
    scheduler = {"scheduler": partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1), "interval": "step"}
    config = configure_optimization(net.parameters(), partial(torch.optim.SGD, lr=0.1), scheduler, 123)
    assert config["lr_scheduler"]["scheduler"].total_steps == 123
    assert config["lr_scheduler"]["interval"] == "step"


def test_infinite_training_cannot_use_a_schedule_over_total_steps():
    scheduler = {"scheduler": partial(warmup_cosine), "interval": "step"}
    with pytest.raises(ValueError, match="max_epochs or trainer.max_steps"):
        configure_optimization(nn.Linear(2, 2).parameters(), torch.optim.SGD, scheduler, float("inf"))


def test_plateau_scheduler_keeps_its_monitor():
    scheduler = {"scheduler": partial(torch.optim.lr_scheduler.ReduceLROnPlateau), "interval": "epoch",
                 "monitor": "val/acc"}
    config = configure_optimization(nn.Linear(2, 2).parameters(), torch.optim.SGD, scheduler, 10)
    assert config["lr_scheduler"]["monitor"] == "val/acc"
