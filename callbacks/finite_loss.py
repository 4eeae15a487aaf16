"""Stop training when the loss stops being finite, naming the first bad step and what to try instead."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from core.errors import ConfigError
from core.host_copy import HostCopy

NONE_YET = 2**62  # the flag's value while every loss has been finite


def learning_rate(trainer: pl.Trainer) -> float | None:
    """The first optimizer's current learning rate (None without an optimizer)."""
    return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None


class StopOnNonFiniteLoss(pl.Callback):
    """Raises ConfigError once a training loss has been NaN or infinite on any process, naming the first.

    Training on from there only spreads NaN through the weights: the run would test a NaN model and a
    later checkpoint could be kept as "best". The check costs the host no wait for the device: each
    step updates a device-side flag (the first bad step, and its loss); every `trainer.log_every_n_steps`
    steps the flag is copied to the host without blocking and read at the next such step, so a run
    stops at most two intervals after its first bad step. Before validation, at each epoch's end, before
    any checkpoint is written and at the end of training the flag is read at once (checkpoints of
    finite epochs are kept, none after the first bad step is written).
    """

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # (step, loss) of the first non-finite loss
        self._copies: deque[tuple[int, HostCopy]] = deque()  # (step it was taken at, the flag)
        self._where: dict[int, tuple[int, int, float | None]] = {}  # step -> (epoch, batch, lr), unchecked
        self._seen_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_bad = torch.tensor([NONE_YET, 0.0], dtype=torch.float64, device=pl_module.device)
        self._copies.clear()
        self._where.clear()
        self._seen_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor) or self._first_bad is None:
            return
        step = trainer.global_step - 1 if trainer.global_step > self._seen_step else trainer.global_step
        self._where[step] = (trainer.current_epoch, batch_idx, learning_rate(trainer))
        value = loss.detach().double().mean()
        newly_bad = ~torch.isfinite(value) & (self._first_bad[0] == NONE_YET)
        # full_like, not tensor(step): a Python number copied to the device would wait for it
        this_step = torch.stack([torch.full_like(value, step), value])
        self._first_bad.copy_(torch.where(newly_bad, this_step, self._first_bad))
        every = trainer.log_every_n_steps
        if trainer.global_step > self._seen_step and every > 0 and trainer.global_step % every == 0:
            if self._copies:  # last interval's copy, landed long ago; every process reads it at this step
                checked_step, copy = self._copies.popleft()
                self._raise_if_bad(trainer, checked_step, copy.result())
            self._copies.append((step, HostCopy(self._reduced(trainer))))
        self._seen_step = trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._check_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_now(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._first_bad is not None:  # this process's flag: a save need not happen on every process
            self._raise_if_bad(trainer, trainer.global_step, self._first_bad.cpu())

    def _check_now(self, trainer: pl.Trainer) -> None:
        """Read the flag, agreed by every process, waiting for the device (not at every step)."""
        if self._first_bad is not None:
            self._copies.clear()
            self._raise_if_bad(trainer, trainer.global_step, self._reduced(trainer).cpu())

    def _reduced(self, trainer: pl.Trainer) -> torch.Tensor:
        """The flag with the earliest bad step of any process (its loss is this process's)."""
        assert self._first_bad is not None
        if trainer.world_size == 1:
            return self._first_bad
        step = trainer.strategy.reduce(self._first_bad[:1].clone(), reduce_op="min")
        return torch.cat([step.to(self._first_bad.dtype), self._first_bad[1:]])

    def _raise_if_bad(self, trainer: pl.Trainer, checked_step: int, flag: torch.Tensor) -> None:
        """Raise if `flag` (read at `checked_step`) holds a bad step; else forget the steps it cleared."""
        step, value = int(flag[0]), float(flag[1])
        if step == NONE_YET:
            self._where = {s: where for s, where in self._where.items() if s > checked_step}
            return
        epoch, batch_idx, lr = self._where.get(step, (trainer.current_epoch, None, learning_rate(trainer)))
        shown = value if value != value or abs(value) == float("inf") else "not finite on another process"
        raise ConfigError(
            f"Training diverged: the loss is {shown} at epoch {epoch}, batch {batch_idx} (step {step}, as "
            f"the loggers count), learning rate {'unknown' if lr is None else f'{lr:g}'}. The run stopped "
            f"at step {trainer.global_step}; checkpoints from earlier epochs are kept, none later than the "
            "bad step is written. Try a lower learning rate"
            f"{'' if lr is None else f' (optimizer.lr={lr / 10:g})'}, gradient clipping "
            "(trainer.gradient_clip_val=1.0), a warm-up (scheduler=onecycle), or precision=32 if it ran "
            "in 16-bit."
        )
