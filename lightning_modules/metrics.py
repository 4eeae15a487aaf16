"""Classification metrics whose definition differs from torchmetrics' defaults, updated without host syncs.

On a CUDA device `torch.bincount` and boolean-mask indexing read a size back to the host, which waits
for every queued kernel. The counts here are `scatter_add_` into fixed-size tensors instead: the same
integers, and the host never waits.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
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
