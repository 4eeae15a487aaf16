"""Stop training at the first step whose loss is not finite, with what to try instead."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from core.errors import ConfigError


def learning_rate(trainer: pl.Trainer) -> float | None:
    """The first optimizer's current learning rate (None without an optimizer)."""
    return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None


class StopOnNonFiniteLoss(pl.Callback):
    """Raises ConfigError at the first training step whose loss is NaN or infinite on any process.

    Training on from there only spreads NaN through the weights: the run would test a NaN model and a
    later checkpoint could be kept as "best". Stopping at once keeps the checkpoints of the finite epochs.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = loss.detach()
        diverged = trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(value).all()), all=False)
        if not diverged:
            return
        lr = learning_rate(trainer)
        raise ConfigError(
            f"Training diverged: the loss is {value.float().mean().item()} at epoch {trainer.current_epoch}, "
            f"batch {batch_idx} (optimizer step {trainer.global_step}), learning rate "
            f"{'unknown' if lr is None else f'{lr:g}'}. The run stopped there; checkpoints from earlier "
            "epochs are kept. Try a lower learning rate"
            f"{'' if lr is None else f' (optimizer.lr={lr / 10:g})'}, gradient clipping "
            "(trainer.gradient_clip_val=1.0), a warm-up (scheduler=onecycle), or precision=32 if it ran "
            "in 16-bit."
        )
