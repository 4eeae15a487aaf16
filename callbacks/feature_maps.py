"""What chosen layers make of fixed validation images, each epoch: the first channels of their activations as
an image grid, and histograms of all their values (`callbacks.feature_maps.layers=[...]`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from callbacks.figure_logging import (  # noqa: E402
    FixedValidationImages,
    image_loggers,
    log_image,
    log_image_to,
    tensorboard_writer,
)
from core.errors import ConfigError  # noqa: E402
from core.figures import colour_map, figure_to_image, to_rgb, upscaled  # noqa: E402
from lightning_modules.nets.layers import find_layers, unwrapped  # noqa: E402


def as_maps(activation: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) as it is; a (B, F) vector as one near-square (B, 1, s, s) map (zero-padded);
    (B, N, C) tokens as one (B, 1, N, C) map."""
    if activation.ndim == 4:
        return activation
    if activation.ndim == 3:
        return activation[:, None]
    flat = activation.flatten(1)
    side = math.ceil(math.sqrt(flat.shape[1]))
    return F.pad(flat, (0, side * side - flat.shape[1])).view(-1, 1, side, side)


def activation_grid(images: torch.Tensor, activation: torch.Tensor, channels: int,
                    min_side: int = 512) -> torch.Tensor:
    """One row per image: the image, then its first `channels` maps, each scaled to its own range and
    coloured (viridis): (3, H, W)."""
    maps = as_maps(activation.detach().float().cpu())[:, :channels]
    low = maps.amin(dim=(2, 3), keepdim=True)
    maps = (maps - low) / (maps.amax(dim=(2, 3), keepdim=True) - low).clamp(min=1e-12)
    size = maps.shape[-2:]
    tiles = []
    for image, row in zip(images, maps, strict=True):
        tiles.append(to_rgb(F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]))
        tiles += [colour_map(channel, "viridis") for channel in row]
    grid = make_grid(torch.stack(tiles), nrow=1 + maps.shape[1], padding=1, pad_value=1.0)
    return upscaled(grid, min_side)


def captured_activations(net: nn.Module, modules: dict[str, nn.Module], images: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """The outputs of `modules` when `net` runs on `images` (no gradients; copies, so that a later
    in-place operation cannot change them)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise ConfigError(f"callbacks.feature_maps.layers: {name} returns a {type(output).__name__}, "
                                  "not a tensor. Choose one of its submodules (print(model) shows them).")
            captured[name] = output.detach().clone()
        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured


class FeatureMaps(FixedValidationImages):
    """Off unless `layers` names some (module names of the network, as `print(model)` shows them).

    Each validation epoch (rank 0): the grid `feature_maps/<layer>` to every logger that takes images;
    the histogram `feature_maps/<layer>` to TensorBoard, and a figure of all of them,
    `feature_maps/histograms`, to the other image loggers (MLflow, W&B).
    """

    def __init__(self, layers: Sequence[str] | None = None, num_images: int = 4, channels: int = 8,
                 min_side: int = 512) -> None:
        super().__init__(num_images, active=bool(layers))
        self.layers = list(layers or [])
        self.channels = channels
        self.min_side = min_side
        self.modules: dict[str, nn.Module] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.layers:
            self.modules = find_layers(pl_module.net, self.layers, "callbacks.feature_maps.layers")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = image_loggers(trainer)
        if trainer.sanity_checking or self.images is None or not loggers:
            return
        dtype = next(pl_module.parameters()).dtype
        activations = captured_activations(unwrapped(pl_module.net), self.modules,
                                           self.images.to(pl_module.device, dtype))
        shown = self.denormalized(trainer)
        for name, activation in activations.items():
            log_image(trainer, f"feature_maps/{name}", activation_grid(shown, activation, self.channels,
                                                                        self.min_side))
        writer = tensorboard_writer(trainer)
        if writer is not None:
            for name, activation in activations.items():
                writer.add_histogram(f"feature_maps/{name}", activation.float().cpu(), trainer.global_step)
        others = [logger for logger in loggers if not isinstance(logger, TensorBoardLogger)]
        if others:
            log_image_to(others, "feature_maps/histograms", histogram_figure(activations),
                         trainer.global_step)


def histogram_figure(activations: dict[str, torch.Tensor]) -> Any:
    """One histogram per layer, side by side, rendered to an (H, W, 3) image."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(activations), figsize=(3 * len(activations), 2.5), squeeze=False)
    for ax, (name, activation) in zip(axes.flat, activations.items(), strict=True):
        ax.hist(activation.float().flatten().cpu().numpy(), bins=64)
        ax.set_title(name, fontsize=8)
    figure.tight_layout()
    image = figure_to_image(figure)
    plt.close(figure)
    return image
