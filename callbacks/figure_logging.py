"""Images and figures to every logger that takes them (TensorBoard, MLflow, W&B), class names, and the base
of the callbacks that draw a validation sample."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch.utils.tensorboard import SummaryWriter

from core.figures import denormalize, figure_to_image

IMAGE_LOGGERS = (TensorBoardLogger, MLFlowLogger, WandbLogger)


def tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the first TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def image_loggers(trainer: pl.Trainer) -> list[Logger]:
    """The run's loggers that take images; empty off rank 0, where nothing is drawn."""
    if not trainer.is_global_zero:
        return []
    return [logger for logger in trainer.loggers if isinstance(logger, IMAGE_LOGGERS)]




def log_image(
    trainer: pl.Trainer, tag: str, image: torch.Tensor | np.ndarray, step: int | None = None
) -> None:
    """Log an image, (3, H, W) floats in [0, 1] or (H, W, 3) uint8, to every logger that takes images."""
    log_image_to(image_loggers(trainer), tag, image, trainer.global_step if step is None else step)


def log_image_to(loggers: list[Logger], tag: str, image: torch.Tensor | np.ndarray, step: int = 0) -> None:
    """Log an image, (3, H, W) floats in [0, 1] or (H, W, 3) uint8, to each of `loggers` that takes images."""
    if isinstance(image, torch.Tensor):
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    for logger in loggers:
        if not isinstance(logger, IMAGE_LOGGERS):
            continue
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            key = re.sub(r"[^\w\-. /]", "_", tag)  # the characters MLflow allows in an image key
            logger.experiment.log_image(logger.run_id, image, key=key, step=step)
        else:
            logger.log_image(key=tag, images=[image], step=step)


def log_figure(trainer: pl.Trainer, tag: str, figure: Any, step: int | None = None) -> None:
    """Log a matplotlib figure to every logger that takes images, then close it."""
    import matplotlib.pyplot as plt

    if image_loggers(trainer):
        log_image(trainer, tag, figure_to_image(figure), step)
    plt.close(figure)




def class_names(trainer: pl.Trainer, num_classes: int) -> list[str]:
    """The datamodule's class names, or the class indices as strings when it has none."""
    classes = getattr(trainer.datamodule, "classes", None)
    if classes and len(classes) == num_classes:
        return [str(name) for name in classes]
    return [str(i) for i in range(num_classes)]




class ValidationSampleFigure(pl.Callback):
    """Keeps the first `num_images` of each epoch's first validation batch, with their predictions
    and targets, and gives them (denormalised) to `draw` at epoch end: rank 0, when a logger takes images."""

    def __init__(self, num_images: int) -> None:
        self.num_images = num_images
        self.sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
             images: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Log the figure of this sample (with `log_figure` or `log_image`)."""
        raise NotImplementedError

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0 and isinstance(outputs, dict):
            n = self.num_images
            self.sample = (batch[0][:n].float().cpu(), outputs["preds"][:n].cpu(),
                           outputs["target"][:n].cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.sample is None or not image_loggers(trainer):
            return
        images, preds, targets = self.sample
        dm = trainer.datamodule
        images = denormalize(images, getattr(dm, "mean", None), getattr(dm, "std", None))
        self.draw(trainer, pl_module, images, preds, targets)


class FixedValidationImages(pl.Callback):
    """Keeps the first `num_images` images (and targets) of the first validation batch it sees, for good:
    the same images each epoch, however the loader orders them. `active` False: keeps nothing."""

    def __init__(self, num_images: int, active: bool = True) -> None:
        self.num_images = num_images
        self.active = active
        self.images: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.active and self.images is None and dataloader_idx == 0:
            self.images = batch[0][: self.num_images].detach().cpu().clone()
            self.targets = batch[1][: self.num_images].detach().cpu().clone()

    def denormalized(self, trainer: pl.Trainer) -> torch.Tensor:
        """The kept images in [0, 1], for display."""
        dm = trainer.datamodule
        return denormalize(self.images.float(), getattr(dm, "mean", None), getattr(dm, "std", None))
