"""Grad-CAM overlays (Captum's LayerGradCam): for fixed validation images each epoch
(`callbacks.cam.enabled`), and for every predicted image (`predict.cam=true`).

Classification shows the predicted and the true class's maps; segmentation shows one class's
(`callbacks.cam.class_name`) over the pixels predicted as it and over those labelled so, as
MMSegmentation's CAM tool does. The layer read is `callbacks.cam.layer`, by default the network's last
convolutional stage (`lightning_modules.nets.layers.default_cam_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from callbacks.figure_logging import FixedValidationImages, class_names, image_loggers, log_image
from core.errors import ConfigError
from core.figures import (
    captioned_grid,
    dataset_palette,
    denormalize,
    heatmap_overlay,
    overlay,
    to_rgb,
    to_uint8,
    upscaled,
)
from lightning_modules.attribution import Forward, class_over_pixels, grad_cam
from lightning_modules.nets.layers import check_map_layer, default_cam_layer, find_layers, unwrapped
from lightning_modules.segmentation import SegmentationModule, main_logits

LAYER_KEY = "callbacks.cam.layer"


def network_forward(pl_module: pl.LightningModule) -> Forward:
    """The task network's logits as one function (a torchvision segmenter's `out`; torch.compile undone)."""
    net = unwrapped(pl_module.net)
    if isinstance(pl_module, SegmentationModule):
        return lambda images: main_logits(net(images))
    return net


def class_index(class_name: str | int | None, names: Sequence[str],
                key: str = "callbacks.cam.class_name") -> int:
    """The index of a class given by name (or index); a ConfigError listing the classes otherwise."""
    if class_name is not None and str(class_name) in names:
        return list(names).index(str(class_name))
    if isinstance(class_name, int) and 0 <= class_name < len(names):
        return class_name
    given = f"{key} is not set" if class_name is None else f"{key}={class_name!r} is not a class of this data"
    raise ConfigError(f"{given}: segmentation's Grad-CAM shows one class. Choose one of: "
                      f"{', '.join(names)}.")


class TargetLayer:
    """The layer Grad-CAM reads: named (checked at once), or the default found on the first images."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.module: nn.Module | None = None

    def check_name(self, net: nn.Module) -> None:
        """A ConfigError with the valid names when the configured layer does not exist."""
        if self.name is not None:
            find_layers(net, [self.name], LAYER_KEY)

    def resolve(self, net: nn.Module, example: torch.Tensor) -> nn.Module:
        """The layer's module, its output checked to be a feature map on `example`."""
        if self.module is None:
            if self.name is None:
                self.name = default_cam_layer(net, example)
            else:
                check_map_layer(net, self.name, example, LAYER_KEY)
            self.module = find_layers(net, [self.name], LAYER_KEY)[self.name]
        return self.module


class GradCAMFigure(FixedValidationImages):
    """Off unless `enabled`. Each validation epoch (rank 0): `val/grad_cam`, rows of image | Grad-CAM of the
    predicted class | of the true class (segmentation: image | prediction | CAM of `class_name` on the
    predicted pixels | on the labelled pixels), to every logger that takes images."""

    def __init__(self, enabled: bool = False, layer: str | None = None, num_images: int = 8,
                 class_name: str | int | None = None, alpha: float = 0.5) -> None:
        super().__init__(num_images, active=enabled)
        self.enabled = enabled
        self.layer = TargetLayer(layer)
        self.class_name = class_name
        self.category: int | None = None
        self.alpha = alpha

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        self.layer.check_name(pl_module.net)
        if isinstance(pl_module, SegmentationModule):
            self.category = class_index(self.class_name, class_names(trainer, pl_module.num_classes))
        elif self.class_name is not None:
            raise ConfigError(f"callbacks.cam.class_name={self.class_name!r} applies to segmentation; "
                              "classification shows the predicted and the true class of each image.")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.images is None or not trainer.is_global_zero:
            return
        images = self.images.to(pl_module.device, next(pl_module.parameters()).dtype)
        layer = self.layer.resolve(unwrapped(pl_module.net), images[:1])  # in the sanity check, if any
        if trainer.sanity_checking or not image_loggers(trainer):
            return
        forward = network_forward(pl_module)
        shown = self.denormalized(trainer)
        names = class_names(trainer, pl_module.num_classes)
        if self.category is None:
            tiles, captions = self.classification_tiles(forward, layer, images, shown, names)
        else:
            tiles, captions = self.segmentation_tiles(trainer, forward, layer, images, shown, names)
        columns = 3 if self.category is None else 4
        log_image(trainer, "val/grad_cam", captioned_grid(tiles, captions, columns, min_tile=160))

    def classification_tiles(self, forward: Forward, layer: nn.Module, images: torch.Tensor,
                             shown: torch.Tensor, names: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        with torch.no_grad():
            probabilities = forward(images).float().softmax(1)
        predicted = probabilities.argmax(1)
        targets = self.targets.to(images.device)
        # one Grad-CAM pass: every image's predicted class, and the true class where it differs
        wrong = (predicted != targets).nonzero().flatten()
        both = grad_cam(forward, layer, torch.cat([images, images[wrong]]),
                        torch.cat([predicted, targets[wrong]]))
        maps = {"pred": both[:len(images)], "true": both[:len(images)].clone()}
        maps["true"][wrong] = both[len(images):]
        tiles, captions = [], []
        for i, image in enumerate(shown):
            p, t = int(predicted[i]), int(targets[i])
            tiles += [to_rgb(image), heatmap_overlay(image, maps["pred"][i], self.alpha),
                      heatmap_overlay(image, maps["true"][i], self.alpha)]
            captions += ["", f"predicted {names[p]} ({probabilities[i, p]:.2f})",
                         f"true {names[t]} ({probabilities[i, t]:.2f})"]
        return tiles, captions

    def segmentation_tiles(self, trainer: pl.Trainer, forward: Forward, layer: nn.Module,
                           images: torch.Tensor, shown: torch.Tensor, names: list[str]
                           ) -> tuple[list[torch.Tensor], list[str]]:
        category = self.category
        with torch.no_grad():
            predicted = forward(images).argmax(1)
        targets = self.targets.to(images.device)
        maps = {kind: grad_cam(class_over_pixels(forward, category, pixels == category), layer, images)
                for kind, pixels in (("pred", predicted), ("true", targets))}
        palette = dataset_palette(trainer.datamodule, len(names))
        tiles, captions = [], []
        for i, image in enumerate(shown):
            tiles += [to_rgb(image), overlay(to_rgb(image), predicted[i].cpu(), palette),
                      heatmap_overlay(image, maps["pred"][i], self.alpha),
                      heatmap_overlay(image, maps["true"][i], self.alpha)]
            counts = [int((pixels[i] == category).sum()) for pixels in (predicted, targets)]
            captions += ["", "prediction", f"{names[category]}: {counts[0]} predicted px",
                         f"{names[category]}: {counts[1]} labelled px"]
        return tiles, captions


class PredictionCAM(pl.Callback):
    """`predict.cam=true`: `cam/<name>.png` per input (`<name>`: its relative path, extension kept, as the
    other outputs), the Grad-CAM of its top-1 class (segmentation: of `class_name` over the pixels predicted
    as it) over the network's input, enlarged to `min_side`."""

    def __init__(self, output_dir: str | Path, names: Sequence[str], classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], layer: str | None = None,
                 class_name: str | int | None = None, alpha: float = 0.5, min_side: int = 224) -> None:
        self.output_dir = Path(output_dir)
        self.names = list(names)
        self.classes = list(classes)
        self.mean, self.std = mean, std
        self.layer = TargetLayer(layer)
        self.class_name = class_name
        self.category: int | None = None
        self.alpha = alpha
        self.min_side = min_side

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.layer.check_name(pl_module.net)
        if isinstance(pl_module, SegmentationModule):
            self.category = class_index(self.class_name, self.classes)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                             batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for positions, images in batch["groups"]:  # one tensor per image size (`collate_inputs`)
            predicted = torch.stack([outputs["probabilities"][p] for p in positions]).argmax(1)
            self.write(pl_module, [batch["index"][p] for p in positions], images.to(pl_module.device),
                       predicted.to(pl_module.device))

    def write(self, pl_module: pl.LightningModule, indices: list[int], images: torch.Tensor,
              predicted: torch.Tensor) -> None:
        """The overlays of images of one size, given their top-1 classes (segmentation: class maps)."""
        layer = self.layer.resolve(unwrapped(pl_module.net), images[:1])
        forward = network_forward(pl_module)
        if self.category is None:
            maps = grad_cam(forward, layer, images, predicted)
        else:
            pixels = predicted == self.category
            maps = grad_cam(class_over_pixels(forward, self.category, pixels), layer, images)
        shown = denormalize(images.float().cpu(), self.mean, self.std)
        for image, heat, index in zip(shown, maps.cpu(), indices, strict=True):
            blended = upscaled(heatmap_overlay(image, heat, self.alpha), self.min_side)
            path = self.output_dir / "cam" / f"{self.names[index]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(blended)).save(path)
