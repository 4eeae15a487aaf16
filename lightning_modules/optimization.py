"""Optimizer and learning-rate scheduler wiring shared by every task."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_factor: float = 0.0
) -> LambdaLR:
    """Linear warm-up over `warmup_fraction` of `total_steps`, then cosine decay to `min_factor`."""
    warmup_steps = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def poly(optimizer: Optimizer, total_steps: int, power: float = 0.9, min_factor: float = 0.0) -> LambdaLR:
    """Polynomial decay per step: lr x ((1 - step / total_steps) ** power), down to lr x `min_factor`.

    MMSegmentation's `PolyLR` with `eta_min` = lr x `min_factor`.
    """

    def factor(step: int) -> float:
        progress = min(1.0, step / max(1, total_steps))
        return min_factor + (1.0 - min_factor) * (1.0 - progress) ** power

    return LambdaLR(optimizer, factor)


def configure_optimization(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., Optimizer],
    scheduler: dict[str, Any] | None,
    total_steps: int,
) -> dict[str, Any]:
    """Build the Lightning `configure_optimizers` answer from partial optimizer/scheduler configs.

    `scheduler` is the `scheduler` config group: `{scheduler: partial, interval, monitor, ...}`.
    Schedulers that take `total_steps` (one-cycle, warm-up cosine) get it from the trainer.
    """
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("The network has no trainable parameters: is the whole model frozen?")
    opt = optimizer(trainable)
    if not scheduler or scheduler.get("scheduler") is None:
        return {"optimizer": opt}
    settings = dict(scheduler)
    make_scheduler = settings.pop("scheduler")
    if "total_steps" in inspect.signature(make_scheduler).parameters:
        make_scheduler = _with_total_steps(make_scheduler, total_steps)
    lr_scheduler = {"scheduler": make_scheduler(opt), "interval": "epoch", **settings}
    return {"optimizer": opt, "lr_scheduler": lr_scheduler}


def _with_total_steps(make_scheduler: Callable[..., Any], total_steps: int) -> Callable[..., Any]:
    keywords = getattr(make_scheduler, "keywords", {})
    if keywords.get("total_steps") is not None:
        return make_scheduler
    if not math.isfinite(total_steps) or total_steps <= 0:
        raise ValueError(
            "This scheduler needs the total number of training steps; set trainer.max_epochs "
            "or trainer.max_steps to a finite value."
        )
    return lambda opt: make_scheduler(opt, total_steps=int(total_steps))
