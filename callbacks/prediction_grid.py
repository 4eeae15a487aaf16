"""A grid of validation images titled with their predicted and true classes."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from callbacks.tensorboard import class_names, tensorboard_writer  # noqa: E402


def denormalize(images: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """Undo `Normalize(mean, std)` and clamp to [0, 1] for display."""
    if mean is None or std is None:
        return images.clamp(0, 1)
    mean = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


class PredictionGrid(pl.Callback):
    """Each validation epoch, shows the first `num_images` images of the first batch in TensorBoard."""

    def __init__(self, num_images: int = 16) -> None:
        self.num_images = num_images
        self.sample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0 and isinstance(outputs, dict):
            n = self.num_images
            self.sample = (batch[0][:n].float().cpu(), outputs["preds"][:n].argmax(1).cpu(),
                           outputs["target"][:n].cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = tensorboard_writer(trainer)
        if trainer.sanity_checking or self.sample is None or writer is None or not trainer.is_global_zero:
            return
        images, preds, targets = self.sample
        dm = trainer.datamodule
        images = denormalize(images, getattr(dm, "mean", None), getattr(dm, "std", None))
        names = class_names(trainer, pl_module.num_classes)
        cols = math.ceil(math.sqrt(len(images)))
        rows = math.ceil(len(images) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, pred, target in zip(axes.flat, images, preds, targets, strict=False):
            cmap = "gray" if image.shape[0] == 1 else None
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap=cmap)
            ax.set_title(f"{names[pred]}\n(true: {names[target]})", fontsize=8,
                         color="green" if pred == target else "red")
        fig.tight_layout()
        writer.add_figure("val/predictions", fig, global_step=trainer.global_step)
        plt.close(fig)
