"""Image | ground truth | prediction panels of a few validation images, in a fixed palette, to the loggers."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
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


def upscaled(grid: torch.Tensor, min_side: int) -> torch.Tensor:
    """(3, H, W) enlarged by the smallest whole factor that makes its longer side >= `min_side` (nearest)."""
    factor = math.ceil(min_side / max(grid.shape[-2:]))
    return F.interpolate(grid[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else grid


def legend(names: dict[int, str], palette: torch.Tensor, width: int, ignore_index: int) -> torch.Tensor:
    """(3, h, width) floats: a colour swatch and the name of each class in `names`, in rows that fit."""
    font = ImageFont.load_default(size=14)
    entry = 20 + max(int(font.getlength(name)) for name in names.values()) + 16
    per_row = max(1, width // entry)
    rows = math.ceil(len(names) / per_row)
    strip = Image.new("RGB", (width, rows * 22 + 4), "white")
    pen = ImageDraw.Draw(strip)
    for position, (index, name) in enumerate(names.items()):
        x, y = (position % per_row) * entry + 4, (position // per_row) * 22 + 4
        colour = tuple(palette[index].tolist()) if index != ignore_index else (255, 255, 255)
        pen.rectangle((x, y, x + 14, y + 14), fill=colour, outline="black")
        pen.text((x + 20, y), name, fill="black", font=font)
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255


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
        shown = sorted({int(v) for mask in (*targets, *preds) for v in mask.unique()})
        classes = list(getattr(trainer.datamodule, "classes", None) or [])
        ignore_index = len(palette)  # colourize paints every value past the palette white

        def name(index: int) -> str:
            return classes[index] if index < len(classes) else str(index)

        names = {i: name(i) for i in shown if i < len(palette)}
        if any(i >= len(palette) for i in shown):
            names[ignore_index] = "ignore"
        return legend(names, palette, width, ignore_index)
