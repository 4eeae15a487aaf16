"""Gatys et al. neural style transfer: the optimised parameter is the image itself."""

from __future__ import annotations

import logging
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer
from torchvision.utils import save_image

from core.errors import ConfigError
from datamodules.style_images import MIN_SIZE, load_source
from datamodules.transforms import resize_longer_side
from lightning_modules.nets.vgg_features import VGGFeatures
from lightning_modules.optimization import ParamGroups
from lightning_modules.style_losses import (
    LossWeights,
    coarse_to_fine_sizes,
    gram_matrix,
    perceptual_losses,
    transfer_luminance,
)

log = logging.getLogger(__name__)


@dataclass
class Targets:
    """What the image is pulled towards at one scale, computed once."""

    content: dict[str, torch.Tensor]
    grams: dict[str, torch.Tensor]


def quiet_design_warnings() -> None:
    """Silence Lightning's warnings about two things this task does by design: each image gets its own
    optimizer in `stylize` (configure_optimizers returns None), and the frozen VGG19 stays in eval mode."""
    warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


LBFGS_STOPPING_OPTIONS = ("max_iter", "max_eval", "tolerance_grad", "tolerance_change")


def is_lbfgs(make_optimizer: Callable[..., Optimizer]) -> bool:
    """Whether the optimizer factory (a class or a partial of one) builds an L-BFGS optimizer."""
    func = getattr(make_optimizer, "func", make_optimizer)
    return isinstance(func, type) and issubclass(func, torch.optim.LBFGS)


def refuse_lbfgs_stopping_options(make_optimizer: Callable[..., Optimizer]) -> None:
    """Refuse L-BFGS stopping options: task=style sets them to run exactly `task.evaluations` evaluations."""
    if not is_lbfgs(make_optimizer):
        return
    given = [f"optimizer.{key}={value}" for key, value in getattr(make_optimizer, "keywords", {}).items()
             if key in LBFGS_STOPPING_OPTIONS and value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} does not apply to task=style: L-BFGS runs exactly task.evaluations loss "
            "evaluations per scale, without stopping early. Set the budget with task.evaluations (one "
            "number, or one per scale) and remove the optimizer option."
        )


def refuse_param_groups(param_groups: ParamGroups | None) -> None:
    """Refuse parameter grouping options: task=style optimises one tensor, the image, in one group."""
    grouping = (param_groups or ParamGroups()).changed()
    if grouping:
        given = ", ".join(f"param_groups.{key}={value}" for key, value in grouping.items())
        raise ConfigError(
            f"{given} does not apply to task=style: the optimised parameter is the image, one tensor in "
            "one group, with no normalisation layers, biases or backbone. Remove the param_groups option."
        )


class StyleTransferModule(pl.LightningModule):
    """Styles each content image of a batch (of one) through all scales in one training step."""

    def __init__(
        self,
        net: VGGFeatures,
        optimizer: Callable[..., Optimizer],
        content_layers: list[str],
        style_layers: dict[str, float],
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        tv_weight: float = 1.0,
        init: str = "content",
        num_scales: int = 1,
        evaluations: int | list[int] = 300,
        preserve_colors: bool = False,
        progress_every: int = 25,
        seed: int = 0,
        output_dir: str = "stylized",
        min_size: int = MIN_SIZE,
        scheduler: dict[str, Any] | None = None,
        param_groups: ParamGroups | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        quiet_design_warnings()
        if scheduler:
            raise ConfigError("task=style does not use a learning-rate schedule: set scheduler=none.")
        refuse_param_groups(param_groups)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        self.automatic_optimization = False
        net.capture([*content_layers, *style_layers])
        self.net = torch.compile(net) if compile else net
        self.optimizer = optimizer
        refuse_lbfgs_stopping_options(self.optimizer)
        self.content_layers = list(content_layers)
        self.style_layers = dict(style_layers)
        self.weights = LossWeights(content_weight, style_weight, tv_weight)
        self.min_size = min_size  # the coarsest scale's smallest side
        self.evaluations = [evaluations] * num_scales if isinstance(evaluations, int) else list(evaluations)
        if len(self.evaluations) != num_scales:
            raise ConfigError(f"task.evaluations needs one count per scale ({num_scales}), "
                              f"got {evaluations}.")
        self.num_scales = num_scales
        self.init = init
        self.preserve_colors = preserve_colors
        self.progress_every = progress_every
        self.seed = seed
        self.output_dir = Path(output_dir)

    def losses(self, image: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        """Weighted content, style and total-variation losses of `image`, and their sum."""
        return perceptual_losses(image, self.net(image), targets.content, targets.grams, self.style_layers,
                                 self.weights)

    @torch.no_grad()
    def targets(self, content: torch.Tensor, styles: list[torch.Tensor], blend: torch.Tensor) -> Targets:
        """Content features and the blended Gram matrices of the style images."""
        content_features = self.net(content)
        grams = {layer: 0 for layer in self.style_layers}
        for style, weight in zip(styles, blend.tolist(), strict=True):
            features = self.net(style)
            for layer in grams:
                grams[layer] = grams[layer] + weight * gram_matrix(features[layer])
        return Targets({k: content_features[k] for k in self.content_layers}, grams)

    def initial_image(self, content: torch.Tensor, name: str) -> torch.Tensor:
        """The starting image: the content, seeded noise, or a given image, at the content's size."""
        if self.init == "content":
            return content.clone()
        if self.init == "noise":
            generator = torch.Generator().manual_seed(image_seed(self.seed, name))
            return torch.rand(content.shape, generator=generator).to(content)
        start = load_source(self.init, max(content.shape[-2:]), min_size=1).to(content)
        return torch.nn.functional.interpolate(start, size=content.shape[-2:], mode="bilinear")

    def make_optimizer(self, image: torch.Tensor, evaluations: int) -> Optimizer:
        """The configured optimizer on the image; L-BFGS runs exactly `evaluations` function evaluations."""
        if is_lbfgs(self.optimizer):  # counted in function evaluations, never stopped early by a tolerance
            return self.optimizer([image], max_iter=evaluations, max_eval=evaluations,
                                  tolerance_grad=-1.0, tolerance_change=-1.0)
        return self.optimizer([image])

    def stylize(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Optimise one content image coarse to fine; returns the result and its loss history."""
        content = sample["content"]
        styles = sample["styles"]
        sizes = coarse_to_fine_sizes(max(content.shape[-2:]), self.num_scales)
        if sizes[0] < self.min_size:
            raise ConfigError(
                f"The coarsest scale would be {sizes[0]} pixels; VGG needs {self.min_size} (data.min_size). "
                "Lower task.num_scales or raise data.image_size."
            )
        history: list[dict[str, float]] = []
        snapshots: list[tuple[int, torch.Tensor]] = []
        image = None
        for size, evaluations in zip(sizes, self.evaluations, strict=True):
            content_s = resize_longer_side(content, size)
            final_side = max(content.shape[-2:])
            styles_s = [resize_longer_side(s, round(max(s.shape[-2:]) * size / final_side)) for s in styles]
            targets = self.targets(content_s, styles_s, sample["style_weights"].to(content))
            if image is None:
                image = self.initial_image(content_s, sample["name"])
            else:
                image = torch.nn.functional.interpolate(image, size=content_s.shape[-2:], mode="bicubic")
            image = self.optimize_scale(image, targets, evaluations, history, snapshots)
        result = image.detach().clamp(0, 1)
        if self.preserve_colors:
            result = transfer_luminance(result, content)
        return {"result": result, "history": history, "snapshots": snapshots}

    def optimize_scale(self, image: torch.Tensor, targets: Targets, evaluations: int,
                       history: list[dict[str, float]], snapshots: list[tuple[int, torch.Tensor]]
                       ) -> torch.Tensor:
        """Run `evaluations` loss evaluations from `image` at one scale; append to the history."""
        # Contiguous, so that L-BFGS can flatten the gradient whatever layout the input had.
        image = image.detach().contiguous().clone().requires_grad_(True)
        optimizer = self.make_optimizer(image, evaluations)
        first = len(history)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            losses = self.losses(image, targets)
            losses["total"].backward()
            # One host-device synchronisation per evaluation, for the history and the NaN check.
            values = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).tolist(),
                              strict=True))
            if not math.isfinite(values["total"]):
                raise FloatingPointError(
                    f"the loss became {values['total']} at evaluation {len(history) + 1}"
                )
            history.append(values)
            if self.progress_every and len(history) % self.progress_every == 0:
                snapshots.append((len(history), image.detach().clamp(0, 1).cpu()))
            return losses["total"]

        while len(history) - first < evaluations:
            optimizer.step(closure)
        return image.detach()

    def training_step(self, sample: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        name = sample["name"]
        try:
            out = self.stylize(sample)
        except FloatingPointError as err:
            log.error("Styling %s stopped: %s. Lower optimizer.lr or the loss weights. "
                      "The other images go on.", name, err)
            return {"name": name, "failed": str(err)}
        file_name = f"{name}__{'+'.join(sample['style_names'])}.png"
        (self.output_dir / file_name).parent.mkdir(parents=True, exist_ok=True)
        save_image(out["result"], self.output_dir / file_name)
        final = out["history"][-1]
        for key, value in final.items():
            self.log(f"train/{key}_loss", value, on_step=False, on_epoch=True, batch_size=1)
        return {"name": name, "file": str(self.output_dir / file_name), **out}

    def written_folders(self) -> dict[str, Path]:
        """What this task writes besides checkpoints and logs, for the run's closing summary."""
        return {"stylized images": self.output_dir}

    def configure_optimizers(self) -> None:
        """Each image gets its own optimizer in `stylize`; Lightning manages none."""
        return None


def image_seed(seed: int, name: str) -> int:
    """A seed for one image that depends on its name, not on the process or order it is styled in."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63
