"""Classification metrics whose definition differs from torchmetrics' defaults, updated without host syncs.

On a CUDA device `torch.bincount` and boolean-mask indexing read a size back to the host, which waits
for every queued kernel. The counts here are `scatter_add_` into fixed-size tensors instead: the same
integers, and the host never waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassPrecisionRecallCurve,
    MulticlassRecall,
    MulticlassROC,
    MulticlassStatScores,
)
from torchmetrics.functional.classification.confusion_matrix import (
    _multiclass_confusion_matrix_tensor_validation,
)
from torchmetrics.functional.classification.stat_scores import (
    _multiclass_stat_scores_format,
    _multiclass_stat_scores_tensor_validation,
)


def confusion_counts(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(num_classes, num_classes) counts of (target, prediction) pairs; `ignore_index` targets count nowhere.

    What `torch.bincount(target * C + preds, minlength=C * C)` counts, without the host sync bincount
    makes on a CUDA device (it reads the maximum to size its output).
    """
    target, preds = target.reshape(-1).long(), preds.reshape(-1).long()
    bins = num_classes * num_classes
    pairs = target * num_classes + preds
    if ignore_index is not None:  # one spare bin collects the ignored pixels
        pairs = torch.where(target == ignore_index, bins, pairs)
    counts = torch.zeros(bins + 1, dtype=torch.long, device=pairs.device)
    counts.scatter_add_(0, pairs, torch.ones_like(pairs))
    return counts[:bins].reshape(num_classes, num_classes)


def stat_scores(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (true positives, false positives, true negatives, false negatives) of a confusion."""
    true_positives = confusion.diagonal()
    false_positives = confusion.sum(0) - true_positives
    false_negatives = confusion.sum(1) - true_positives
    true_negatives = confusion.sum() - (false_positives + false_negatives + true_positives)
    return true_positives, false_positives, true_negatives, false_negatives


class CountedWithoutSync:
    """`update` for a torchmetrics MulticlassStatScores metric (top-1, global): its statistics from
    `confusion_counts`, the very integers torchmetrics counts, with no host sync on a GPU."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        assert self.top_k == 1 and self.multidim_average == "global", "top-1, global statistics only"
        if self.validate_args:
            _multiclass_stat_scores_tensor_validation(preds, target, self.num_classes, self.multidim_average,
                                                      self.ignore_index)
        preds, target = _multiclass_stat_scores_format(preds, target, 1)
        scores = stat_scores(confusion_counts(preds, target, self.num_classes, self.ignore_index))
        if self.average == "micro":
            scores = tuple(score.sum() for score in scores)
        self._update_state(*scores)


class Accuracy(CountedWithoutSync, MulticlassAccuracy):
    """torchmetrics' MulticlassAccuracy (top-1), counted without host syncs."""


class F1Score(CountedWithoutSync, MulticlassF1Score):
    """torchmetrics' MulticlassF1Score (top-1), counted without host syncs."""


class JaccardIndex(MulticlassJaccardIndex):
    """torchmetrics' MulticlassJaccardIndex, its confusion matrix counted without host syncs."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.validate_args:
            _multiclass_confusion_matrix_tensor_validation(preds, target, self.num_classes, self.ignore_index)
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        self.confmat += confusion_counts(preds, target, self.num_classes, self.ignore_index)


class BalancedAccuracy(CountedWithoutSync, MulticlassStatScores):
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


class SampleMean(Metric):
    """The mean over samples of per-batch means (each weighted by its batch size), summed across processes.

    torchmetrics' MeanMetric copies a Python weight to the device and checks for NaN with a host read
    at every update; this adds in place, in float64 (exact to float32 over any epoch).
    """

    full_state_update = False
    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int) -> None:
        """Add a batch's mean `value` (0-dim) for `weight` samples."""
        self.total += value.detach().double() * weight
        self.count += weight

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()
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
