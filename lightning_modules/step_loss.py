"""The training loss of every N-th step for the loggers and the progress bar, without host-device syncs."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch

from core.host_copy import HostCopy


class StepLossReporter:
    """Every `trainer.log_every_n_steps`-th optimizer step, the step's loss goes to the loggers (at that
    step, as Lightning logs it) and to the progress bar.

    `self.log(loss, on_step=True)` would read the loss with `.item()` for the bar at every step and for
    the loggers at every N-th, each read waiting for the device to finish the step. Here the loss is
    copied to the host behind the step's kernels, and published a few steps later, once the copy has
    landed (on the CPU: at once).
    """

    def __init__(self, name: str = "train/loss_step") -> None:
        self.name = name
        self.pending: deque[tuple[int, HostCopy]] = deque()
        self.seen_step = 0

    def start(self, global_step: int) -> None:
        """Training (re)starts at optimizer step `global_step`."""
        self.pending.clear()
        self.seen_step = global_step

    def after_batch(self, module: pl.LightningModule, loss: Any) -> None:
        """Copy `loss` when this batch made a logging step; publish the copies that have landed."""
        trainer = module.trainer
        step, every = trainer.global_step, trainer.log_every_n_steps
        stepped, self.seen_step = step != self.seen_step, step  # no step while gradients accumulate
        if stepped and isinstance(loss, torch.Tensor) and every > 0 and step % every == 0:
            self.pending.append((step - 1, HostCopy(loss)))
        latest = None
        while self.pending and self.pending[0][1].ready():
            latest = self.publish(module, *self.pending.popleft())
        if latest is not None:  # a host tensor: the bar's `.item()` does not wait for the device
            module.log(self.name, latest, prog_bar=True, logger=False, on_step=True, on_epoch=False,
                       batch_size=1)

    def flush(self, module: pl.LightningModule) -> None:
        """Publish every pending copy (waiting for them): at the end of an epoch or of training."""
        while self.pending:
            self.publish(module, *self.pending.popleft())

    def publish(self, module: pl.LightningModule, step: int, copy: HostCopy) -> torch.Tensor:
        """Write the loss of optimizer step `step` to every logger; return it as a host tensor."""
        value = copy.result().float()
        for logger in module.loggers:
            logger.log_metrics({self.name: float(value)}, step=step)
        return value
