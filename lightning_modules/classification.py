"""Image classification: any network that maps images to class logits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.inference.modes import classify_logits
from lightning_modules.supervised import SupervisedTask


class ClassificationModule(SupervisedTask):
    """Cross-entropy training with top-1, top-5 and macro accuracy per stage."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        compile: bool = False,
        train_metrics_every_n_steps: int = 1,
        tta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, compile, train_metrics_every_n_steps)
        tta = dict(tta or {})  # a plain dict, which checkpoints store safely
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.tta_flip = bool(tta.get("flip", False))
        self.setup_metrics()

    def make_metrics(self) -> MetricCollection:
        metrics = {
            "acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "acc_macro": MulticlassAccuracy(self.num_classes, average="macro"),
        }
        if self.num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        return MetricCollection(metrics)

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the image, averaged with its mirror's when `task.tta.flip`."""
        return classify_logits(self, x, flip=self.tta_flip)

    def inference_description(self) -> str:
        return "centre + flip TTA" if self.tta_flip else "single-view"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"The network returned shape {tuple(logits.shape)}, expected (batch, "
                f"{self.num_classes}) logits: does model.num_classes match data.num_classes?"
            )
        return logits
