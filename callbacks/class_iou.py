"""Per-class IoU of segmentation: logged each validation and test epoch, tabled at test end."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from rich.console import Console
from rich.table import Table

from callbacks.confusion_matrix import ConfusionMatrixLogger
from callbacks.tensorboard import class_names, tensorboard_writer


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class, TP / (TP + FP + FN), from a (true x predicted) matrix; NaN for absent classes."""
    confusion = confusion.double()
    true_positives = confusion.diagonal()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - true_positives
    return true_positives / union


def iou_table(names: list[str], iou: torch.Tensor, confusion: torch.Tensor) -> list[tuple[str, str, int]]:
    """Rows (class, IoU or "absent", ground-truth pixels) for every class."""
    pixels = confusion.sum(dim=1).tolist()
    return [(name, f"{value:.4f}" if value == value else "absent", int(count))
            for name, value, count in zip(names, iou.tolist(), pixels, strict=True)]


class ClassIoULogger(ConfusionMatrixLogger):
    """Logs `<stage>_per_class/iou_<class>`; at test end prints a rich table and writes it to TensorBoard."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__(ignore_index=ignore_index)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        confusion = self.matrix.compute().cpu()
        if trainer.sanity_checking:
            return
        names = class_names(trainer, pl_module.num_classes)
        iou = iou_from_confusion(confusion)
        for name, value in zip(names, iou.tolist(), strict=True):
            if value == value:  # not NaN: the class occurs in the target or the prediction
                pl_module.log(f"{stage}_per_class/iou_{name}", value, sync_dist=False)
        if stage != "test" or not trainer.is_global_zero:
            return
        rows = iou_table(names, iou, confusion)
        table = Table(title=f"Test IoU per class (mean {iou.nanmean().item():.4f})")
        for column in ("class", "IoU", "pixels"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, value, count in rows:
            table.add_row(name, value, str(count))
        Console().print(table)
        writer = tensorboard_writer(trainer)
        if writer is not None:
            markdown = "| class | IoU | pixels |\n| --- | --- | --- |\n" + "\n".join(
                f"| {name} | {value} | {count} |" for name, value, count in rows)
            writer.add_text("test/iou_per_class", markdown, global_step=trainer.global_step)
