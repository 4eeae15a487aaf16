"""Precision, recall and F1 per class and averaged, each validation and test epoch; at test end the table as
scikit-learn prints it, and one-vs-rest precision-recall and ROC curves with their macro areas."""

from __future__ import annotations

import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torchmetrics import MetricCollection  # noqa: E402

from callbacks.figure_logging import class_names, image_loggers, log_figure, tensorboard_writer  # noqa: E402
from lightning_modules.metrics import (  # noqa: E402
    ClassificationReport,
    curve_metrics,
    macro_over_present,
    report_metrics,
)


class ClassificationReportLogger(pl.Callback):
    """Scores from torchmetrics objects synchronised across processes, one set per stage (val, test).

    The macro and weighted averages (and at test end macro AP and AUROC) are logged like the module's
    metrics (console, loggers, metrics.json); the per-class scores go to the loggers and, through
    `reported_metrics`, to metrics.json, keeping Lightning's console table short.
    """

    def __init__(self, curves: bool = True, thresholds: int | None = None, digits: int = 4,
                 max_legend: int = 20) -> None:
        self.curves = curves
        self.thresholds = thresholds
        self.digits = digits
        self.max_legend = max_legend
        self.scores: dict[str, MetricCollection] = {}
        self.curve_scores: MetricCollection | None = None
        self.reported_metrics: dict[str, float] = {}
        self.last_report: ClassificationReport | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.scores:
            self.scores = {name: report_metrics(pl_module.num_classes) for name in ("val", "test")}
            if self.curves:
                self.curve_scores = curve_metrics(pl_module.num_classes, self.thresholds)

    def _collections(self, stage: str) -> list[MetricCollection]:
        extra = [self.curve_scores] if stage == "test" and self.curve_scores is not None else []
        return [self.scores[stage], *extra]

    def _start(self, pl_module: pl.LightningModule, stage: str) -> None:
        for collection in self._collections(stage):
            collection.to(pl_module.device).reset()

    def _update(self, outputs: Any, stage: str) -> None:
        if isinstance(outputs, dict):
            for collection in self._collections(stage):
                collection.update(outputs["preds"], outputs["target"])

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        names = class_names(trainer, pl_module.num_classes)
        report = ClassificationReport.from_computed(self.scores[stage].compute(), names)  # synchronised
        averages, per_class = report.metrics(stage, f"{stage}_per_class")
        for key, value in averages.items():
            pl_module.log(key, value, sync_dist=False)  # already the same on every process
        self.reported_metrics.update(per_class)
        for logger in trainer.loggers if trainer.is_global_zero else []:
            logger.log_metrics(per_class, step=trainer.global_step)
        if stage == "test":
            self.last_report = report
            if self.curve_scores is not None:
                self._curves(trainer, pl_module, report)
            if trainer.is_global_zero:
                self._print(trainer, report)

    def _curves(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                report: ClassificationReport) -> None:
        with warnings.catch_warnings():  # classes absent from the targets: left out of the means below
            warnings.filterwarnings("ignore", message=".*(No positive samples|was `nan`).*")
            computed = self.curve_scores.compute()
        areas = {key: macro_over_present(computed[key], report.support) for key in ("ap", "auroc")}
        for key, value in areas.items():
            pl_module.log(f"test/{key}_macro", value, sync_dist=False)
        self.reported_metrics.update({
            f"test_per_class/{key}_{report.names[index]}": float(computed[key][index])
            for key in ("ap", "auroc") for index, count in enumerate(report.support) if count})
        if image_loggers(trainer):
            precision, recall, _ = computed["pr_curve"]
            log_figure(trainer, "test/pr_curves", self._figure(
                report.names, recall, precision, ("recall", "precision"),
                f"Precision-recall, one-vs-rest (macro AP {areas['ap']:.4f})"))
            false_positive_rate, true_positive_rate, _ = computed["roc"]
            log_figure(trainer, "test/roc_curves", self._figure(
                report.names, false_positive_rate, true_positive_rate,
                ("false positive rate", "true positive rate"),
                f"ROC, one-vs-rest (macro AUROC {areas['auroc']:.4f})"))

    def _figure(self, names: list[str], xs: Any, ys: Any, labels: tuple[str, str], title: str) -> Any:
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=(6, 5))
        for name, x, y in zip(names, xs, ys, strict=True):
            x, y = (torch.as_tensor(v).float().cpu().numpy() for v in (x, y))  # bf16 has no numpy dtype
            ax.plot(x, y, linewidth=1, label=name)
        ax.set(xlabel=labels[0], ylabel=labels[1], title=title, xlim=(0, 1), ylim=(0, 1.02))
        if len(names) <= self.max_legend:
            ax.legend(fontsize=7, loc="lower left" if labels[0] == "recall" else "lower right")
        figure.tight_layout()
        return figure

    def _print(self, trainer: pl.Trainer, report: ClassificationReport) -> None:
        text = report.text(self.digits)
        absent = [name for name, present in zip(report.names, report.present, strict=True) if not present]
        note = f"\nNeither in the test targets nor predicted: {', '.join(absent)}\n" if absent else ""
        print(f"\nTest classification report:\n{text}{note}")
        writer = tensorboard_writer(trainer)
        if writer is not None:  # indented: TensorBoard's markdown keeps the columns
            writer.add_text("test/classification_report", "    " + text.replace("\n", "\n    "),
                            global_step=trainer.global_step)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module, "test")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs, "test")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")
