"""Image classification: any network that maps images to class logits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from core.errors import ConfigError
from lightning_modules.distillation import distill_options
from lightning_modules.ema import ExponentialMovingAverage
from lightning_modules.finetuning import BackboneFinetuning
from lightning_modules.inference import classify_logits
from lightning_modules.metrics import BalancedAccuracy
from lightning_modules.optimization import ParamGroups
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
        train_metrics_every_n_batches: int = 1,
        param_groups: ParamGroups | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_switch_prob: float = 0.5,
        ema: dict[str, Any] | None = None,
        unfreeze_backbone_at_epoch: int | None = None,
        tta: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
    ) -> None:
        ema = dict(ema or {})  # a plain dict in the checkpoint's hyperparameters, not a DictConfig
        distill = distill_options(distill)
        super().__init__(net, optimizer, scheduler, compile, train_metrics_every_n_batches, param_groups)
        tta = dict(tta or {})  # a plain dict, which checkpoints store safely
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "param_groups"])
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mix = batch_mixing(num_classes, mixup_alpha, cutmix_alpha, mix_switch_prob)
        self.ema = ema
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self._mixed_batch: tuple[tuple[int, int], Any] | None = None
        self.tta_flip = bool(tta.get("flip", False))
        self.setup_metrics()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        """MixUp / CutMix whole training batches on the device; validation and test stay untouched."""
        if self.mix is not None:
            key = (self.current_epoch, batch_idx)
            if self._mixed_batch is None or self._mixed_batch[0] != key:  # L-BFGS: one mix per batch
                self._mixed_batch = (key, self.mix(*batch))
            batch = self._mixed_batch[1]
        return super().training_step(batch, batch_idx)

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        """Mixed (soft) targets are scored against their dominant label."""
        return target.argmax(dim=1) if target.ndim == 2 else target

    def configure_callbacks(self) -> list[pl.Callback]:
        """While fitting: the weights' EMA (`task.ema.decay` set; checkpoints carry it for later stages)
        and the frozen backbone (`model.freeze_backbone`, `task.unfreeze_backbone_at_epoch`)."""
        if self.trainer.state.fn != TrainerFn.FITTING:
            return []
        callbacks: list[pl.Callback] = []
        if self.ema.get("decay") is not None:
            callbacks.append(ExponentialMovingAverage(**self.ema))
        if getattr(self.net, "freeze_backbone", False) or self.unfreeze_backbone_at_epoch is not None:
            head_prefix = self.head_prefix()
            if head_prefix is None:
                raise ConfigError("task.unfreeze_backbone_at_epoch needs a network with a pretrained "
                                  "backbone and a new head (model=torchvision, resnet50, ...).")
            callbacks.append(BackboneFinetuning(head_prefix, self.unfreeze_backbone_at_epoch))
        return callbacks

    def unfreezes_later(self) -> bool:
        return self.unfreeze_backbone_at_epoch is not None

    def make_metrics(self) -> MetricCollection:
        metrics = {
            "acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "acc_macro": BalancedAccuracy(self.num_classes),  # scikit-learn's balanced accuracy
        }
        if self.num_classes > 5:
            metrics["acc_top5"] = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        # torchmetrics' automatic compute groups merge metrics whose states are equal after the
        # first update: a first batch right at top-1 would make top-5 a copy of top-1 for good.
        return MetricCollection(metrics, compute_groups=False)

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with label smoothing, on class indices or on mixed class probabilities."""
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the image, averaged with its mirror's when `task.tta.flip`."""
        return classify_logits(self, x, flip=self.tta_flip)

    def inference_description(self) -> str:
        return "centre + flip TTA" if self.tta_flip else "single-view"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"The network returned shape {tuple(logits.shape)}, expected (batch, "
                f"{self.num_classes}) logits: does model.num_classes match data.num_classes?"
            )
        return logits


def batch_mixing(
    num_classes: int, mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5
) -> v2.Transform | None:
    """torchvision's reference batch mixing: MixUp, CutMix, or one of them per batch when both are set.

    `switch_prob` is the probability of CutMix when both alphas are positive; None when both are 0.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ConfigError(f"task.mixup_alpha={mixup_alpha}, task.cutmix_alpha={cutmix_alpha}: "
                          "alphas are Beta-distribution parameters, > 0 (or 0 for off).")
    mixes = []
    if mixup_alpha > 0:
        mixes.append((v2.MixUp(alpha=mixup_alpha, num_classes=num_classes), 1.0 - switch_prob))
    if cutmix_alpha > 0:
        mixes.append((v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes), switch_prob))
    if not mixes:
        return None
    if len(mixes) == 1:
        return mixes[0][0]
    return v2.RandomChoice([mix for mix, _ in mixes], p=[p for _, p in mixes])
