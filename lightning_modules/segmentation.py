"""Semantic segmentation: any network mapping images to per-pixel class logits (or torchvision's dict)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection

from core.contracts import SegmentationInference
from core.errors import ConfigError
from lightning_modules.distillation import distill_options
from lightning_modules.inference import segment_logits
from lightning_modules.losses import SegmentationLoss
from lightning_modules.metrics import Accuracy, F1Score, JaccardIndex
from lightning_modules.optimization import ParamGroups
from lightning_modules.supervised import SupervisedTask

Output = torch.Tensor | Mapping[str, torch.Tensor]


def main_logits(output: Output) -> torch.Tensor:
    """The logits of a network's output: the tensor itself, or torchvision's `out` entry."""
    return output["out"] if isinstance(output, Mapping) else output


class SegmentationModule(SupervisedTask):
    """A weighted sum of per-pixel losses (plus the auxiliary head's); mIoU, pixel accuracy, Dice.

    Metrics accumulate a confusion over the whole dataset of each stage; `ignore_index` pixels
    count nowhere, and classes absent from both target and prediction are left out of the means.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: dict[str, Any] | None = None,
        ignore_index: int = 255,
        losses: Mapping[str, float] | None = None,
        loss_options: Mapping[str, Mapping[str, Any]] | None = None,
        class_weights: Sequence[float] | None = None,
        aux_weight: float = 0.5,
        compile: bool = False,
        train_metrics_every_n_batches: int = 1,
        param_groups: ParamGroups | None = None,
        inference: str = "whole",
        crop_size: int | None = None,
        stride: int | None = None,
        tta: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, compile, train_metrics_every_n_batches, param_groups)
        self.inference = SegmentationInference.from_task(
            {"inference": inference, "crop_size": crop_size, "stride": stride, "tta": tta})
        stride, tta = self.inference.stride, self.inference.task_options()["tta"]
        distill = distill_options(distill)  # a plain dict in the checkpoint's hyperparameters
        # plain containers, which checkpoints can store and load safely
        losses = {str(name): float(weight) for name, weight in (losses or {"ce": 1.0}).items()}
        loss_options = {str(name): dict(options or {}) for name, options in (loss_options or {}).items()}
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        if class_weights is not None and len(class_weights) != num_classes:
            raise ConfigError(f"task.class_weights has {len(class_weights)} entries for "
                             f"{num_classes} classes: give one weight per class.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.loss = SegmentationLoss(losses, ignore_index, class_weights, loss_options)
        self.setup_metrics()

    def make_metrics(self) -> MetricCollection:
        # The datamodules check mask values before training; torchmetrics' per-batch argument
        # checks would scan every mask again and synchronise with the device at each step, and its
        # counting masks out the ignore index and uses bincount (both wait for a GPU): these count
        # the same integers with scatter_add_.
        options = {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                   "validate_args": False}
        return MetricCollection({
            "miou": JaccardIndex(average="macro", **options),
            "pixel_acc": Accuracy(average="micro", **options),
            "dice": F1Score(average="macro", **options),
        }, compute_groups=False)  # no merging of states found equal after one batch (see classification)

    def forward(self, x: torch.Tensor) -> Output:
        output = self.net(x)
        logits = main_logits(output)
        if logits.ndim != 4 or logits.shape[1] != self.num_classes or logits.shape[-2:] != x.shape[-2:]:
            raise ConfigError(
                f"The network returned logits of shape {tuple(logits.shape)} for images of shape "
                f"{tuple(x.shape)}; expected (batch, {self.num_classes}, {x.shape[-2]}, "
                f"{x.shape[-1]}): does model.num_classes match data.num_classes?"
            )
        return output

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of `task.inference` (whole or slide), averaged over `task.tta` flips and scales."""
        return segment_logits(lambda batch: main_logits(self(batch)), x, **self.inference.logits_options())

    def inference_description(self) -> str:
        return self.inference.describe()

    def compute_loss(self, output: Output, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss(main_logits(output), target)
        aux = output.get("aux") if isinstance(output, Mapping) else None
        if aux is not None and self.aux_weight:
            loss = loss + self.aux_weight * self.loss(aux, target)
        return loss

    def logits(self, output: Output) -> torch.Tensor:
        return main_logits(output)

    def distill_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Pixels that count: every one but `ignore_index`'s."""
        return target != self.ignore_index

    def predictions(self, output: Output) -> torch.Tensor:
        """The predicted class of every pixel."""
        return main_logits(output).argmax(dim=1)
