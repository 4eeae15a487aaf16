"""A grid of validation images titled with their predicted and true classes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from callbacks.figure_logging import ValidationSampleFigure, class_names, log_figure  # noqa: E402
from core.figures import subplot_grid  # noqa: E402


class PredictionGrid(ValidationSampleFigure):
    """Each validation epoch, shows the first `num_images` images of the first batch to the loggers."""

    def __init__(self, num_images: int = 16) -> None:
        super().__init__(num_images)

    def draw(self, trainer, pl_module, images, preds, targets) -> None:
        preds = preds.argmax(1)
        names = class_names(trainer, pl_module.num_classes)
        fig, axes = subplot_grid(len(images), cell_height=2.2)
        for ax, image, pred, target in zip(axes.flat, images, preds, targets, strict=False):
            cmap = "gray" if image.shape[0] == 1 else None
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap=cmap)
            ax.set_title(f"{names[pred]}\n(true: {names[target]})", fontsize=8,
                         color="green" if pred == target else "red")
        fig.tight_layout()
        log_figure(trainer, "val/predictions", fig)
