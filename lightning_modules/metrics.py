"""Classification metrics whose definition differs from torchmetrics' defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassPrecisionRecallCurve,
    MulticlassRecall,
    MulticlassROC,
    MulticlassStatScores,
)


class BalancedAccuracy(MulticlassStatScores):
    """Mean recall over the classes present in the targets: scikit-learn's `balanced_accuracy_score`.

    torchmetrics' macro accuracy also averages over classes that are only predicted, each counting as 0.
    The per-class true-positive and false-negative counts are metric states summed across processes.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, top_k=1, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        true_positives, _, _, false_negatives = self._final_state()
        support = true_positives + false_negatives
        present = support > 0
        return (true_positives[present].double() / support[present]).mean().float()


SCORES = ("precision", "recall", "f1")
AVERAGES = {"macro": "macro", "weighted": "weighted", "per_class": "none"}


def report_metrics(num_classes: int) -> MetricCollection:
    """Precision, recall and F1 (macro, weighted, per class) and the per-class counts, sharing one state.

    torchmetrics' definitions: a score whose denominator is 0 counts 0 (scikit-learn's `zero_division`),
    and the macro mean leaves out classes absent from both targets and predictions (scikit-learn's
    default labels). The ten metrics are the same per-class counts reduced ten ways, so they form
    one compute group, named explicitly: the collection updates one of them per batch. (Automatic
    compute groups stay off, as everywhere here: they merge metrics whose states only look equal.)
    """
    kinds = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}
    metrics: dict[str, Metric] = {"counts": MulticlassStatScores(num_classes, average="none")}
    for score, kind in kinds.items():
        for label, average in AVERAGES.items():
            metrics[f"{score}_{label}"] = kind(num_classes, average=average)
    return MetricCollection(metrics, compute_groups=[list(metrics)])


def curve_metrics(num_classes: int, thresholds: int | None = None) -> MetricCollection:
    """One-vs-rest precision-recall and ROC curves and each class's areas (AP, AUROC), sharing one state.

    `thresholds=None` keeps every score (exact, as scikit-learn); an integer bins the scores at that
    many thresholds (constant memory, for large test sets).
    """
    options = {"num_classes": num_classes, "thresholds": thresholds}
    metrics = {
        "ap": MulticlassAveragePrecision(average="none", **options),
        "auroc": MulticlassAUROC(average="none", **options),
        "pr_curve": MulticlassPrecisionRecallCurve(**options),
        "roc": MulticlassROC(**options),
    }
    return MetricCollection(metrics, compute_groups=[list(metrics)])


def macro_over_present(per_class: torch.Tensor, support: list[int]) -> float:
    """The mean of per-class areas over the classes that occur in the targets.

    As scikit-learn's macro AP and one-vs-rest AUROC where those are defined (scikit-learn refuses
    targets that lack a class; torchmetrics' own macro AUROC would count such a class as 0).
    """
    present = torch.tensor(support, device=per_class.device) > 0
    return float(per_class[present].double().mean()) if present.any() else float("nan")


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class precision, recall, F1 and support with their averages, as scikit-learn reports them."""

    names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    present: list[bool]  # in the targets or the predictions: the rows scikit-learn shows
    accuracy: float
    averages: dict[str, tuple[float, float, float]]  # "macro" / "weighted" -> (precision, recall, F1)

    @classmethod
    def from_computed(cls, computed: dict[str, torch.Tensor], names: list[str]) -> ClassificationReport:
        """The report of `report_metrics(...).compute()` (keys without the collection's prefix)."""
        true_positives, false_positives, _, false_negatives, support = computed["counts"].long().T
        per_class = {score: computed[f"{score}_per_class"].tolist() for score in SCORES}
        averages = {label: tuple(float(computed[f"{score}_{label}"]) for score in SCORES)
                    for label in ("macro", "weighted")}
        total = int(support.sum())
        return cls(names, per_class["precision"], per_class["recall"], per_class["f1"], support.tolist(),
                   (true_positives + false_positives + false_negatives > 0).tolist(),
                   int(true_positives.sum()) / total if total else 0.0, averages)

    def metrics(self, prefix: str, per_class_prefix: str) -> tuple[dict[str, float], dict[str, float]]:
        """The averages as `<prefix>/<score>_<average>` and the present classes' scores and supports as
        `<per_class_prefix>/<score>_<class>`."""
        averages = {f"{prefix}/{score}_{label}": values[i] for label, values in self.averages.items()
                    for i, score in enumerate(SCORES)}
        per_class: dict[str, float] = {}
        for index in self.present_classes():
            name = self.names[index]
            for score in SCORES:
                per_class[f"{per_class_prefix}/{score}_{name}"] = getattr(self, score)[index]
            per_class[f"{per_class_prefix}/support_{name}"] = float(self.support[index])
        return averages, per_class

    def present_classes(self) -> list[int]:
        """Indices of the classes in the targets or the predictions."""
        return [index for index, present in enumerate(self.present) if present]

    def text(self, digits: int = 4) -> str:
        """The table as scikit-learn's `classification_report` prints it, character for character."""
        names = [self.names[index] for index in self.present_classes()]
        width = max(*(len(name) for name in names), len("weighted avg"), digits)
        headings = ("precision", "recall", "f1-score", "support")
        header = f"{'':>{width}s} " + "".join(f" {heading:>9}" for heading in headings)
        row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        lines = header + "\n\n"
        for index, name in zip(self.present_classes(), names, strict=True):
            lines += row.format(name, self.precision[index], self.recall[index], self.f1[index],
                                self.support[index], width=width, digits=digits)
        total = sum(self.support)
        lines += "\n" + ("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
            "accuracy", "", "", self.accuracy, total, width=width, digits=digits)
        for label, values in self.averages.items():
            lines += row.format(f"{label} avg", *values, total, width=width, digits=digits)
        return lines
