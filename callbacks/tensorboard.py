"""TensorBoard helpers for the figure callbacks: the writer, class names, a sample of validation images."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


def tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the first TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def class_names(trainer: pl.Trainer, num_classes: int) -> list[str]:
    """The datamodule's class names, or the class indices as strings when it has none."""
    classes = getattr(trainer.datamodule, "classes", None)
    if classes and len(classes) == num_classes:
        return [str(name) for name in classes]
    return [str(i) for i in range(num_classes)]


def denormalize(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """Undo `Normalize(mean, std)` and clamp to [0, 1] for display."""
    if mean is None or std is None:
        return images.clamp(0, 1)
    mean = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


class ValidationSampleFigure(pl.Callback):
    """Keeps the first `num_images` of each epoch's first validation batch, with their predictions
    and targets, and gives them (denormalised) to `draw` at epoch end: TensorBoard only, rank 0."""

    def __init__(self, num_images: int) -> None:
        self.num_images = num_images
        self.sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def draw(self, writer: SummaryWriter, trainer: pl.Trainer, pl_module: pl.LightningModule,
             images: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Write the figure of this sample."""
        raise NotImplementedError

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0 and isinstance(outputs, dict):
            n = self.num_images
            self.sample = (batch[0][:n].float().cpu(), outputs["preds"][:n].cpu(),
                           outputs["target"][:n].cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if trainer.sanity_checking or self.sample is None or writer is None or not trainer.is_global_zero:
            return
        images, preds, targets = self.sample
        dm = trainer.datamodule
        images = denormalize(images, getattr(dm, "mean", None), getattr(dm, "std", None))
        self.draw(writer, trainer, pl_module, images, preds, targets)
