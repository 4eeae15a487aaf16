"""Confusion matrix figure and per-class accuracy for classification, at validation and test end."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402

from callbacks.figure_logging import class_names, image_loggers, log_figure  # noqa: E402


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Recall of each class from a (true x predicted) confusion matrix; NaN for absent classes."""
    confusion = confusion.double()
    return confusion.diagonal() / confusion.sum(dim=1)


class ConfusionMatrixLogger(pl.Callback):
    """Accumulates a dataset-wide confusion matrix (synced across processes) and logs it."""

    def __init__(self, max_annotated_classes: int = 20, ignore_index: int | None = None) -> None:
        self.max_annotated_classes = max_annotated_classes
        self.ignore_index = ignore_index
        self.matrix: MulticlassConfusionMatrix | None = None

    def _start(self, pl_module: pl.LightningModule) -> None:
        if self.matrix is None:
            self.matrix = MulticlassConfusionMatrix(pl_module.num_classes, ignore_index=self.ignore_index)
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def _update(self, outputs: Any) -> None:
        if self.matrix is not None and isinstance(outputs, dict):
            self.matrix.update(outputs["preds"], outputs["target"])

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        confusion = self.matrix.compute().cpu()
        if trainer.sanity_checking:
            return
        names = class_names(trainer, pl_module.num_classes)
        for name, acc in zip(names, per_class_accuracy(confusion).tolist(), strict=True):
            if acc == acc:  # not NaN: the class occurs in this stage's data
                pl_module.log(f"{stage}_per_class/acc_{name}", acc, sync_dist=False)
        if image_loggers(trainer):
            fig, _ = self.matrix.plot(
                confusion, add_text=len(names) <= self.max_annotated_classes,
                labels=names if len(names) <= 2 * self.max_annotated_classes else None,
            )
            fig.set_size_inches(max(6, 0.25 * len(names)), max(6, 0.25 * len(names)))
            log_figure(trainer, f"{stage}/confusion_matrix", fig)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

