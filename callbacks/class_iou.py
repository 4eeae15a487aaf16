"""Per-class IoU, accuracy and Dice of segmentation: logged each validation and test epoch, tabled at
test end with MMSegmentation's summary (aAcc, mIoU, mAcc, mDice)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callbacks.confusion_matrix import ConfusionMatrixLogger
from callbacks.figure_logging import class_names, tensorboard_writer

SCORES = ("IoU", "Acc", "Dice")


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class, TP / (TP + FP + FN), from a (true x predicted) matrix; NaN for absent classes."""
    return class_scores(confusion)["IoU"]


def class_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per class, from a (true x predicted) matrix: IoU, accuracy (recall, TP / ground truth) and Dice.

    As MMSegmentation's `intersect_and_union` metrics: a score whose denominator is 0 is NaN
    (IoU and Dice: class absent from target and prediction; accuracy: absent from the target).
    """
    confusion = confusion.double()
    true_positives = confusion.diagonal()
    predicted, actual = confusion.sum(dim=0), confusion.sum(dim=1)
    return {
        "IoU": true_positives / (predicted + actual - true_positives),
        "Acc": true_positives / actual,
        "Dice": 2 * true_positives / (predicted + actual),
    }


def summary(confusion: torch.Tensor) -> dict[str, float]:
    """MMSegmentation's summary: aAcc (all pixels' accuracy) and the NaN-skipping means mIoU, mAcc, mDice."""
    confusion = confusion.double()
    scores = class_scores(confusion)
    return {"aAcc": (confusion.diagonal().sum() / confusion.sum()).item(),
            **{f"m{name}": values.nanmean().item() for name, values in scores.items()}}


def score_rows(names: list[str], confusion: torch.Tensor) -> list[tuple[str, ...]]:
    """Rows (class, IoU, Acc, Dice, ground-truth pixels) for every class; "-" for an undefined score."""
    scores = class_scores(confusion)
    pixels = confusion.sum(dim=1).tolist()
    return [(name, *(_percent(scores[s][i].item()) for s in SCORES), str(int(pixels[i])))
            for i, name in enumerate(names)]


def _percent(value: float) -> str:
    return f"{100 * value:.2f}" if value == value else "-"


class ClassIoULogger(ConfusionMatrixLogger):
    """Logs `<stage>_per_class/{iou,acc,dice}_<class>` (IoU also to metrics.json); at test end prints
    rich tables (per class, then aAcc, mIoU, mAcc, mDice in %) and writes them to TensorBoard."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__(ignore_index=ignore_index)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        confusion = self.matrix.compute().cpu()
        if trainer.sanity_checking:
            return
        names = class_names(trainer, pl_module.num_classes)
        scores = class_scores(confusion)
        for name, value in zip(names, scores["IoU"].tolist(), strict=True):
            if value == value:  # not NaN: the class occurs in the target or the prediction
                pl_module.log(f"{stage}_per_class/iou_{name}", value, sync_dist=False)
        if not trainer.is_global_zero:
            return
        # accuracy and Dice go to the loggers only, keeping the console's metric table short
        extra = {f"{stage}_per_class/{score.lower()}_{name}": value for score in ("Acc", "Dice")
                 for name, value in zip(names, scores[score].tolist(), strict=True) if value == value}
        for logger in trainer.loggers:
            logger.log_metrics(extra, step=trainer.global_step)
        if stage != "test":
            return
        rows = score_rows(names, confusion)
        means = {key: _percent(value) for key, value in summary(confusion).items()}
        console = Console()
        console.print(_table("Test scores per class (%)", ("class", *SCORES, "pixels"), rows))
        console.print(_table("Test summary (%)", tuple(means), [tuple(means.values())]))
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_text("test/scores_per_class", _markdown(("class", *SCORES, "pixels"), rows),
                            global_step=trainer.global_step)
            writer.add_text("test/summary", _markdown(tuple(means), [tuple(means.values())]),
                            global_step=trainer.global_step)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in rows:
        table.add_row(*map(Text, row))  # class names (folder names) printed as given, not as rich markup
    return table


def _markdown(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
