"""Image | ground truth | prediction panels of a few validation images, in a fixed palette, to the loggers."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from callbacks.figure_logging import ValidationSampleFigure, log_image
from core.figures import dataset_palette, legend, overlay, upscaled


class SegmentationOverlays(ValidationSampleFigure):
    """Each validation epoch: rows of image | ground truth | prediction for the first `num_images` images."""

    def __init__(self, num_images: int = 4, alpha: float = 0.6, min_side: int = 768) -> None:
        super().__init__(num_images)
        self.alpha = alpha
        self.min_side = min_side

    def draw(self, trainer, pl_module, images, preds, targets) -> None:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
        palette = dataset_palette(trainer.datamodule, pl_module.num_classes)
        panels = []
        for image, target, pred in zip(images, targets, preds, strict=True):
            panels += [image, overlay(image, target, palette, self.alpha),
                       overlay(image, pred, palette, self.alpha)]
        grid = upscaled(make_grid(torch.stack(panels), nrow=3, padding=2, pad_value=1.0), self.min_side)
        legend_rows = self.legend_for(trainer, targets, preds, palette, grid.shape[-1])
        log_image(trainer, "val/overlays", torch.cat([grid, legend_rows], dim=1))

    def legend_for(self, trainer, targets, preds, palette: torch.Tensor, width: int) -> torch.Tensor:
        """The legend of the classes shown (void, if shown, as `ignore`), names from the datamodule."""
        present = sorted({int(v) for mask in (*targets, *preds) for v in mask.unique()})
        classes = list(getattr(trainer.datamodule, "classes", None) or [])
        ignore_index = len(palette)  # colourize paints every value past the palette white

        def name(index: int) -> str:
            return classes[index] if index < len(classes) else str(index)

        names = {i: name(i) for i in present if i < len(palette)}
        if any(i >= len(palette) for i in present):
            names[ignore_index] = "ignore"
        return legend(names, palette, width, ignore_index)
