"""What VGG19 keeps of an image at each depth, as in Figure 1 of Gatys, Ecker and Bethge, "Image Style
Transfer Using Convolutional Neural Networks" (CVPR 2016): images optimised from white noise to match the
content features of one layer at a time (no style term), and the Gram matrices of growing sets of style
layers (no content term). One grid per content image: the style image and the style reconstructions
above, the content image and the content reconstructions below.

Each reconstruction is a `StyleTransferModule` run (its `stylize`) with that layer set and the other
term's layers empty, so the two share every other setting (optimizer, evaluations, scales, seed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.optim import Optimizer
from torchvision.utils import save_image

from core.errors import ConfigError
from core.figures import captioned_grid
from lightning_modules.nets.vgg_features import VGGFeatures
from lightning_modules.style_transfer import StyleTransferModule, quiet_design_warnings


def style_layer_sets(style_layers: dict[str, float]) -> list[dict[str, float]]:
    """The growing sets: the first layer, the first two, ..., each set's weights scaled to sum to 1."""
    names = list(style_layers)
    sets = []
    for count in range(1, len(names) + 1):
        chosen = {name: float(style_layers[name]) for name in names[:count]}
        total = sum(chosen.values())
        if total <= 0:
            raise ConfigError(f"task.style_layers {style_layers}: give the layers positive weights.")
        sets.append({name: weight / total for name, weight in chosen.items()})
    return sets


def caption(layers: list[str] | dict[str, float]) -> str:
    """`relu1_1`, `relu1_1 + relu2_1`, `relu1_1 ... relu3_1`: the layers a reconstruction matched."""
    names = list(layers)
    return " + ".join(names) if len(names) <= 2 else f"{names[0]} ... {names[-1]}"


def fitted(image: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(1, 3, h, w) scaled to fit `size` (H, W) keeping its aspect ratio, on white: a (3, H, W) tile."""
    scale = min(size[0] / image.shape[-2], size[1] / image.shape[-1])
    height, width = round(image.shape[-2] * scale), round(image.shape[-1] * scale)
    resized = F.interpolate(image.float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    tile = torch.ones(3, *size, device=image.device)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    tile[:, top:top + height, left:left + width] = resized.clamp(0, 1)
    return tile


class StyleReconstructionModule(pl.LightningModule):
    """Content reconstructions from each of `content_layers` and style reconstructions from the growing
    sets of `style_layers`, for each content image (a batch of one); other options as task=style's."""

    def __init__(
        self,
        net: VGGFeatures,
        optimizer: Callable[..., Optimizer],
        content_layers: list[str],
        style_layers: dict[str, float],
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        output_dir: str = "reconstructions",
        **transfer_options: Any,
    ) -> None:
        super().__init__()
        quiet_design_warnings()
        if not content_layers and not style_layers:
            raise ConfigError("task.content_layers and task.style_layers are both empty: nothing to "
                              "reconstruct.")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        self.automatic_optimization = False
        self.net = net
        self.optimizer = optimizer
        self.content_layers = list(content_layers)
        self.style_sets = style_layer_sets(dict(style_layers))
        self.weights = {"content": content_weight, "style": style_weight}
        self.transfer_options = transfer_options
        self.output_dir = Path(output_dir)
        for options in self.reconstructions().values():  # a wrong layer name fails now, not after an image
            self.transfer(options)

    def reconstructions(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(row, deepest layer) -> layers and weights of each reconstruction: style sets, content layers."""
        style = {("style", list(layers)[-1]): {"content_layers": [], "style_layers": layers,
                                                "content_weight": 0.0, "style_weight": self.weights["style"]}
                 for layers in self.style_sets}
        content = {("content", layer): {"content_layers": [layer], "style_layers": {},
                                        "content_weight": self.weights["content"], "style_weight": 0.0}
                   for layer in self.content_layers}
        return {**style, **content}

    def transfer(self, layers: dict[str, Any]) -> StyleTransferModule:
        """A style-transfer module for one reconstruction, on its own copy of the network (it keeps only the
        layers it reads)."""
        return StyleTransferModule(copy.deepcopy(self.net), self.optimizer, **layers,
                                   output_dir=str(self.output_dir), **self.transfer_options)

    def training_step(self, sample: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        content = sample["content"]
        rows: dict[str, list[tuple[torch.Tensor, str]]] = {
            "style": [(fitted(sample["styles"][0], content.shape[-2:]), "+".join(sample["style_names"]))],
            "content": [(content[0], sample["name"])],
        }
        for (row, deepest), layers in self.reconstructions().items():
            result = self.transfer(layers).stylize(sample)
            rows[row].append((result["result"][0], caption(layers[f"{row}_layers"])))
            self.log(f"train/{row}_{deepest}_loss", result["history"][-1]["total"], on_step=False,
                     on_epoch=True, batch_size=1)
        columns = max(len(tiles) for tiles in rows.values())
        tiles, captions = [], []
        for row in rows.values():
            blanks = columns - len(row)
            tiles += [tile.cpu() for tile, _ in row] + [torch.ones_like(content[0]).cpu()] * blanks
            captions += [caption for _, caption in row] + [""] * blanks
        grid = captioned_grid(tiles, captions, columns, min_tile=128)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.output_dir / f"{sample['name']}.png")
        return {"name": sample["name"], "grid": grid}

    def written_folders(self) -> dict[str, Path]:
        """What this task writes besides logs, for the run's closing summary."""
        return {"reconstructions": self.output_dir}

    def configure_optimizers(self) -> None:
        """Each reconstruction gets its own optimizer; Lightning manages none."""
        return None
