"""Exponential moving average of the weights, as torchvision's reference recipes keep it (--model-ema):
a callback the classification module configures for itself from `task.ema`, so it lives beside it."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_avg_fn

from core.errors import ConfigError


def reference_decay(decay: float, batch_size: int, world_size: int, every_n_steps: int, epochs: int) -> float:
    """torchvision's adjustment of --model-ema-decay to the batch size, update interval and epochs.

    alpha = 1 - decay is scaled by `world_size * batch_size * every_n_steps / epochs` (capped at 1),
    so a decay tuned for one recipe means the same averaging horizon in images for another.
    """
    alpha = min(1.0, (1.0 - decay) * world_size * batch_size * every_n_steps / epochs)
    return 1.0 - alpha


class ExponentialMovingAverage(WeightAveraging):
    """EMA of parameters and buffers (BatchNorm statistics included), updated every `every_n_steps` steps.

    Lightning's `WeightAveraging` evaluates with the averaged weights (validation, the test of the
    best checkpoint, and the weights left after fit), stores them as the checkpoint's `state_dict`
    with the trained ones in `current_model_state`, and restores both on resume. During the first
    `warmup_epochs` the average restarts after every update, so it follows the weights exactly,
    as the reference does during its learning-rate warm-up. With `adjust_decay`, `decay` is
    adjusted to batch size, devices and epochs as the reference does.
    """

    def __init__(
        self, decay: float, every_n_steps: int = 1, warmup_epochs: int = 0, adjust_decay: bool = False
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"task.ema.decay={decay}: the EMA decay must be in [0, 1), e.g. 0.9998.")
        if every_n_steps < 1:
            raise ConfigError(f"task.ema.every_n_steps={every_n_steps}: update at least every step (>= 1).")
        super().__init__(use_buffers=True)
        self.decay = decay
        self.every_n_steps = every_n_steps
        self.warmup_epochs = warmup_epochs
        self.adjust_decay = adjust_decay

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        decay = self.decay
        if self.adjust_decay:
            batch_size = getattr(trainer.datamodule, "batch_size", None)
            if batch_size is None or trainer.max_epochs in (None, -1):
                raise ConfigError("task.ema.adjust_decay=true needs data.batch_size and trainer.max_epochs.")
            decay = reference_decay(decay, batch_size, trainer.world_size, self.every_n_steps,
                                    trainer.max_epochs)
        self._kwargs["avg_fn"] = get_ema_avg_fn(decay)
        super().setup(trainer, pl_module, stage)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Only a resumed fit restores the trained weights beside the average; testing or
        # predicting a checkpoint keeps its `state_dict`, the averaged weights.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.current_epoch < self.warmup_epochs and self._average_model is not None:
            self._average_model.n_averaged.fill_(0)  # the next update copies the weights
