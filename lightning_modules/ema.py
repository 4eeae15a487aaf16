"""Exponential moving average of the weights, as torchvision's reference recipes keep it (--model-ema):
a callback the classification module configures for itself from `task.ema`, so it lives beside it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn

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

    An update is one `torch._foreach_lerp_` per dtype (torch's `get_ema_multi_avg_fn`) on the
    device that trains, and never reads a value back to the host: `AveragedModel.update_parameters`
    would test its update count on the host twice per update.
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
        self._pairs: list[tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None  # per dtype
        self._copy_next = True  # the next update copies the weights (as AveragedModel does at n_averaged 0)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        decay = self.decay
        if self.adjust_decay:
            batch_size = getattr(trainer.datamodule, "batch_size", None)
            if batch_size is None or trainer.max_epochs in (None, -1):
                raise ConfigError("task.ema.adjust_decay=true needs data.batch_size and trainer.max_epochs.")
            decay = reference_decay(decay, batch_size, trainer.world_size, self.every_n_steps,
                                    trainer.max_epochs)
        self._kwargs["multi_avg_fn"] = get_ema_multi_avg_fn(decay)
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning builds the average in `setup`, before the strategy moves the module to its
        # device: the average of a GPU run would stay on the CPU, each update copying every weight.
        if self._average_model is not None:
            self._average_model.to(pl_module.device)
            self._copy_next = int(self._average_model.n_averaged) == 0  # once per fit (a resume sets it)
        self._pairs = None

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
        step_idx = trainer.global_step - 1  # as WeightAveraging counts, so every_n_steps means the same
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self.update_average(pl_module)
            self._latest_update_step = trainer.global_step
        if trainer.current_epoch < self.warmup_epochs and self._average_model is not None:
            self._average_model.n_averaged.fill_(0)  # the next update copies the weights
            self._copy_next = True

    @torch.no_grad()
    def update_average(self, pl_module: pl.LightningModule) -> None:
        """One EMA update of the average from `pl_module`'s parameters and buffers (no host sync)."""
        assert self._average_model is not None
        if self._pairs is None:
            self._pairs = same_dtype_pairs(self._average_model.module, pl_module)
        for averaged, current in self._pairs:
            if self._copy_next:
                torch._foreach_copy_(averaged, current)
            else:
                self._average_model.multi_avg_fn(averaged, current, None)
        self._copy_next = False
        self._average_model.n_averaged += 1


def same_dtype_pairs(averaged: torch.nn.Module, current: torch.nn.Module
                     ) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """The two modules' parameters then buffers, paired in order and grouped by dtype (foreach needs one)."""
    groups: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = defaultdict(lambda: ([], []))
    for mine, theirs in zip([*averaged.parameters(), *averaged.buffers()],
                            [*current.parameters(), *current.buffers()], strict=True):
        groups[mine.dtype][0].append(mine)
        groups[mine.dtype][1].append(theirs)
    return list(groups.values())
