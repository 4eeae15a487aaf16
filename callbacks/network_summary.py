"""Lightning's rich model summary of the network alone, with its FLOPs at the run's input size."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary import ModelSummary
from torch import nn


class NetworkModelSummary(ModelSummary):
    """Lightning's ModelSummary restricted to `net` and its layers: the metric objects, losses and
    frozen helpers a task module also holds are not layers of the network."""

    def __init__(self, model: pl.LightningModule, max_depth: int = 2, prefix: str = "net") -> None:
        self._prefix = prefix
        super().__init__(model, max_depth=max_depth)

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in self._model.named_modules()
                if name == self._prefix or name.startswith(self._prefix + ".")]


def example_input(trainer: pl.Trainer) -> torch.Tensor | None:
    """One image of the datamodule's channels and training size, or None when it does not say them."""
    datamodule = trainer.datamodule
    channels, side = getattr(datamodule, "channels", None), getattr(datamodule, "image_size", None)
    if not isinstance(channels, int) or not isinstance(side, int):
        return None
    return torch.zeros(1, channels, side, side)


class NetworkSummary(RichModelSummary):
    """The network's layers to `max_depth` (1: `net`, 2: its children) with parameters, output sizes and
    FLOPs, measured by one forward pass of a zero image of the data's size (Lightning counts none
    without an `example_input_array`)."""

    def __init__(self, max_depth: int = 2, **kwargs: Any) -> None:
        super().__init__(max_depth=max_depth, **kwargs)

    def _summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ModelSummary:
        before = pl_module.example_input_array
        if before is None:
            pl_module.example_input_array = example_input(trainer)
        try:
            return NetworkModelSummary(pl_module, max_depth=self._max_depth)
        finally:
            pl_module.example_input_array = before
