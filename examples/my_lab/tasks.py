"""Your own task: a LightningModule whose constructor takes the network and what run.py passes every task
(net, optimizer, scheduler, param_groups, compile) besides its own `task.*` keys.

Subclassing visionlab's SupervisedTask gives the training/validation/test steps, per-stage metrics,
optimizer and scheduler wiring (warm-up, parameter groups), test-time inference and predict; a task
implements `make_metrics`, `compute_loss`, `inference_logits` and `inference_description`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.optimization import ParamGroups
from lightning_modules.supervised import SupervisedTask


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Lin et al.'s focal loss: each image's cross-entropy times (1 - p_true) ** gamma, averaged."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


class FocalClassification(SupervisedTask):
    """Image classification trained with the focal loss, which weighs down the images already learnt.

    `net`, `optimizer` (a partial, called on the parameters), `scheduler`, `param_groups` and `compile`
    come from run.py; `num_classes` (${data.num_classes}) and `gamma` are the `task.*` keys.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: dict[str, Any] | None = None,
        param_groups: ParamGroups | None = None,
        compile: bool = False,
        *,
        num_classes: int,
        gamma: float = 2.0,
    ) -> None:
        super().__init__(net, optimizer, scheduler, compile, param_groups=param_groups)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        self.num_classes = num_classes
        self.gamma = gamma
        self.setup_metrics()

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.num_classes, average="micro")})

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(output, target, self.gamma)

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def inference_description(self) -> str:
        return "single-view"
