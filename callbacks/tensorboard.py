"""Finding TensorBoard among the trainer's loggers, and the names to label figures with."""

from __future__ import annotations

import pytorch_lightning as pl
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
