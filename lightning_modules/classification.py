"""Image classification: any network that maps images to class logits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from datamodules.errors import ConfigError
from lightning_modules.metrics import BalancedAccuracy
from lightning_modules.supervised import SupervisedTask


class ClassificationModule(SupervisedTask):
    """Cross-entropy training with top-1, top-5 and macro (balanced) accuracy per stage."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        compile: bool = False,
        train_metrics_every_n_steps: int = 1,
    ) -> None:
        super().__init__(net, optimizer, scheduler, compile, train_metrics_every_n_steps)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.setup_metrics()

    def make_metrics(self) -> MetricCollection:
        metrics = {
            "acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "acc_macro": BalancedAccuracy(self.num_classes),  # scikit-learn's balanced accuracy
        }
        if self.num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        return MetricCollection(metrics)

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"The network returned shape {tuple(logits.shape)}, expected (batch, "
                f"{self.num_classes}) logits: does model.num_classes match data.num_classes?"
            )
        return logits
