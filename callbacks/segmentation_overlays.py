"""Image | ground truth | prediction panels of a few validation images, in a fixed palette, to the loggers."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from callbacks.tensorboard import ValidationSampleFigure, log_image


def voc_palette(num_classes: int) -> torch.Tensor:
    """Pascal VOC's colour map, (num_classes, 3) uint8: class 0 black, 1 maroon, 2 green, ..."""
    colours = torch.zeros(num_classes, 3, dtype=torch.uint8)
    for index in range(num_classes):
        value, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours[index] = torch.tensor(rgb, dtype=torch.uint8)
    return colours


def dataset_palette(datamodule: object, num_classes: int) -> torch.Tensor:
    """The datamodule's own class colours (Cityscapes, ADE20K), or else Pascal VOC's colour map."""
    palette = getattr(datamodule, "palette", None)
    if palette is not None and len(palette) == num_classes:
        return torch.tensor(palette, dtype=torch.uint8)
    return voc_palette(num_classes)


def colourize(mask: torch.Tensor, palette: torch.Tensor, ignore_colour: int = 255) -> torch.Tensor:
    """(H, W) class indices -> (3, H, W) floats in [0, 1]; out-of-palette values (ignore) in white."""
    known = mask < len(palette)
    colours = palette[torch.where(known, mask, 0)].permute(2, 0, 1).float() / 255
    return torch.where(known, colours, torch.full_like(colours, ignore_colour / 255))


def overlay(
    image: torch.Tensor, mask: torch.Tensor, palette: torch.Tensor, alpha: float = 0.6
) -> torch.Tensor:
    """Blend a colourized mask over an RGB image in [0, 1]."""
    return (1 - alpha) * image + alpha * colourize(mask, palette)


class SegmentationOverlays(ValidationSampleFigure):
    """Each validation epoch: rows of image | ground truth | prediction for the first `num_images` images."""

    def __init__(self, num_images: int = 4, alpha: float = 0.6) -> None:
        super().__init__(num_images)
        self.alpha = alpha

    def draw(self, trainer, pl_module, images, preds, targets) -> None:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
        palette = dataset_palette(trainer.datamodule, pl_module.num_classes)
        panels = []
        for image, target, pred in zip(images, targets, preds, strict=True):
            panels += [image, overlay(image, target, palette, self.alpha),
                       overlay(image, pred, palette, self.alpha)]
        grid = make_grid(torch.stack(panels), nrow=3, padding=2, pad_value=1.0)
        log_image(trainer, "val/overlays", grid)
